"""What the CLI says and where it looks, decided without starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from imagefleet.cli.connection import explain
from imagefleet.cli.datadir import DB_FILE, Source, find_data_dir, found_by_default
from imagefleet.cli.fleet import _worker_key
from imagefleet.cli.up import TOUR_COMMAND, _threads, _tour_hint
from imagefleet.client import ApiError

URL = "http://127.0.0.1:8000"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test runs in its own empty folder, with its own per-user data directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    for name in ("IMAGEFLEET_DATA_DIR", "IMAGEFLEET_DATABASE_URL", "IMAGEFLEET_WORKER_KEY"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def _with_database(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DB_FILE).write_bytes(b"")
    return folder


def test_a_validation_error_names_the_cli_flag_not_the_api_field() -> None:
    error = ApiError(
        422,
        [
            {"loc": ["body", "params", "width"], "msg": "Value error, must be a multiple of 8"},
            {"loc": ["body", "params", "guidance_scale"], "msg": "Input should be <= 50"},
        ],
    )
    assert (
        explain(error, URL) == "--width: must be a multiple of 8; --guidance: Input should be <= 50"
    )


def test_hints_at_http_routes_become_hints_at_commands() -> None:
    error = ApiError(404, "no model named 'nope'; see GET /v1/models")
    assert explain(error, URL) == "no model named 'nope'; see `imagefleet models list`"


def test_a_refused_key_says_how_to_pass_or_make_one() -> None:
    message = explain(ApiError(401, "invalid or revoked API key"), URL)
    assert URL in message and "--key" in message and "imagefleet keys create" in message


def test_the_flag_wins_then_the_variable_then_the_local_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = _with_database(tmp_path / ".imagefleet")
    assert find_data_dir(None, create=False).source is Source.local
    env_dir = _with_database(tmp_path / "from-env")
    monkeypatch.setenv("IMAGEFLEET_DATA_DIR", str(env_dir))
    assert find_data_dir(None, create=False).path == env_dir
    flagged = _with_database(tmp_path / "flagged")
    assert find_data_dir(flagged, create=False).path == flagged
    assert found_by_default() == local


def test_without_a_local_folder_the_per_user_default_is_used(tmp_path: Path) -> None:
    user = _with_database(tmp_path / "xdg" / "imagefleet")
    found = find_data_dir(None, create=False)
    assert (found.path, found.source) == (user, Source.user)


def test_a_command_that_reads_state_never_creates_an_empty_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(typer.Exit):
        find_data_dir(None, create=False)
    error = capsys.readouterr().err
    assert "no imagefleet data directory found" in error and "imagefleet up" in error
    assert not (tmp_path / ".imagefleet").exists() and not (tmp_path / "xdg").exists()


def test_a_named_folder_without_a_database_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("IMAGEFLEET_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(typer.Exit):
        find_data_dir(None, create=False)
    assert f"no imagefleet database in {tmp_path / 'empty'} (from $IMAGEFLEET_DATA_DIR)" in (
        capsys.readouterr().err
    )


def test_commands_that_set_up_a_fleet_create_the_per_user_default(tmp_path: Path) -> None:
    found = find_data_dir(None, create=True)
    assert found.path == tmp_path / "xdg" / "imagefleet" and found.path.is_dir()


def test_the_worker_key_comes_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "worker.key"
    key_file.write_text("if_from_file\n")
    assert _worker_key(None, key_file) == "if_from_file"
    monkeypatch.setenv("IMAGEFLEET_WORKER_KEY", "if_from_env")
    assert _worker_key(None, None) == "if_from_env"
    assert capsys.readouterr().err == ""


def test_a_worker_key_on_the_command_line_works_with_a_warning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _worker_key("if_visible", None) == "if_visible"
    assert "visible to every user of this machine (ps)" in capsys.readouterr().err


@pytest.mark.parametrize("problem", ["both", "empty", "missing", "none"])
def test_a_missing_or_ambiguous_worker_key_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], problem: str
) -> None:
    empty = tmp_path / "empty.key"
    empty.write_text("\n")
    arguments = {
        "both": ("if_x", empty),
        "empty": (None, empty),
        "missing": (None, tmp_path / "nope.key"),
        "none": (None, None),
    }[problem]
    with pytest.raises(typer.Exit):
        _worker_key(*arguments)
    assert capsys.readouterr().err.startswith("error: ")


def test_up_hints_the_tour_with_the_port_and_folder_it_really_uses(tmp_path: Path) -> None:
    user = tmp_path / "xdg" / "imagefleet"
    assert _tour_hint(URL, user) == TOUR_COMMAND
    assert _tour_hint("http://127.0.0.1:9000", user).endswith(" --url http://127.0.0.1:9000")
    elsewhere = tmp_path / "elsewhere"
    assert _tour_hint(URL, elsewhere) == f"{TOUR_COMMAND} --data-dir {elsewhere}"


def test_local_workers_share_the_cores_leaving_one_for_the_orchestrator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert _threads(1) == "1"
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert (_threads(1), _threads(4), _threads(32)) == ("15", "3", "1")
