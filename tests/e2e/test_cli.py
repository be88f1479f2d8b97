"""The real `imagefleet` command against a stopped orchestrator and a live one: every expected
failure is one line that says what happened and what to do, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from imagefleet.store.database import Database
from imagefleet.store.keys import create_key
from imagefleet.store.models import register_model
from tests.harness.orchestrator import OrchestratorProcess
from tests.harness.ports import free_port
from tests.harness.processes import child_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str


def imagefleet(*args: str, cwd: Path, **env: str) -> Ran:
    """Runs the command as a user would, in `cwd`, with a home of its own (so the per-user
    data directory is empty unless a test fills it)."""
    done = subprocess.run(
        [sys.executable, "-m", "imagefleet", *args],
        cwd=cwd,
        env=child_env(HOME=str(cwd / "home"), XDG_DATA_HOME=str(cwd / "home" / "data"), **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    return Ran(done.returncode, done.stdout, done.stderr)


@dataclass(frozen=True)
class LiveFleet:
    url: str
    client_key: str
    worker_key: str
    folder: Path


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveFleet]:
    """An orchestrator process with a client key, a worker key and a model, and no worker:
    jobs stay queued, which is what these tests look at."""
    folder = tmp_path_factory.mktemp("cli")
    data_dir = folder / "data"
    data_dir.mkdir()
    db = Database(f"sqlite:///{data_dir / 'imagefleet.db'}")
    db.upgrade()
    with db.write() as conn:
        _, client_key = create_key(conn, name="alice", scope="client", tier="free", now=1.0)
        _, worker_key = create_key(conn, name="workers", scope="worker", tier="free", now=1.0)
        register_model(
            conn, name="demo", kind="checkpoint", source="/m", sha256="d" * 64, size_bytes=1, now=1
        )
    db.dispose()
    orchestrator = OrchestratorProcess(data_dir, env=child_env(), data_dir=data_dir).start()
    try:
        yield LiveFleet(orchestrator.url, client_key, worker_key, folder)
    finally:
        orchestrator.stop()


def test_a_stopped_orchestrator_is_one_line_with_the_url_and_how_to_start_one(
    tmp_path: Path,
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for command in (["submit", "a cat", "--wait"], ["jobs", "list"]):
        ran = imagefleet(*command, "--url", url, "--key", "if_x_y", cwd=tmp_path)
        assert ran.code == 2
        assert ran.err.count("\n") == 1, ran.err
        assert f"cannot reach the orchestrator at {url}" in ran.err
        assert "imagefleet up" in ran.err


def test_a_command_run_from_another_folder_creates_nothing_and_says_where_it_looked(
    tmp_path: Path,
) -> None:
    ran = imagefleet("keys", "list", cwd=tmp_path)
    assert ran.code == 1
    assert "no imagefleet data directory found" in ran.err
    assert str(tmp_path / ".imagefleet") in ran.err
    assert not list(tmp_path.rglob("*.db"))


def test_validation_errors_name_the_flag_and_hint_at_commands(live: LiveFleet) -> None:
    common = ("--url", live.url, "--key", live.client_key)
    width = imagefleet("submit", "a cat", "--width", "100", *common, cwd=live.folder)
    model = imagefleet("submit", "a cat", "--model", "nope", *common, cwd=live.folder)
    assert width.code == 1 and width.err == "error: --width: must be a multiple of 8, got 100\n"
    assert model.code == 1 and "`imagefleet models list`" in model.err
    assert "GET /v1" not in width.err + model.err and "body.params" not in width.err


def test_wrong_keys_say_which_key_to_use(live: LiveFleet) -> None:
    bad = imagefleet("jobs", "list", "--url", live.url, "--key", "if_no_such", cwd=live.folder)
    worker = imagefleet(
        "jobs", "list", "--url", live.url, "--key", live.worker_key, cwd=live.folder
    )
    assert bad.code == 1 and "refused the key" in bad.err and "--key" in bad.err
    assert worker.code == 1 and "needs a client key" in worker.err and "keys list" in worker.err


def test_a_wait_that_times_out_says_the_job_goes_on_and_how_to_follow_it(
    live: LiveFleet,
) -> None:
    common = ("--url", live.url, "--key", live.client_key)
    ran = imagefleet(
        *("submit", "a cat", "--width", "64", "--height", "64", "--steps", "2"),
        *("--same-node-retry", "--wait", "--timeout", "1", *common),
        cwd=live.folder,
    )
    job_id = ran.out.split()[1]
    assert ran.code == 1
    assert f"job {job_id} still queued after 1 s" in ran.err
    assert f"`imagefleet jobs get {job_id}`" in ran.err
    assert "cannot reach" not in ran.err

    listed = imagefleet("jobs", "list", *common, cwd=live.folder)
    header, *rows = listed.out.splitlines()
    assert header.split()[:3] == ["id", "status", "queued"]
    assert any(row.split()[:2] == [job_id, "queued"] for row in rows)

    early = imagefleet("jobs", "download", job_id, "-o", "out", *common, cwd=live.folder)
    assert early.code == 1 and "wait for it to succeed" in early.err
    assert not (live.folder / "out").exists()

    attempts = imagefleet("jobs", "attempts", job_id, *common, cwd=live.folder)
    assert attempts.out.strip() == f"job {job_id} has not been tried yet"

    cancelled = imagefleet("jobs", "cancel", job_id, *common, cwd=live.folder)
    assert cancelled.out.strip() == f"job {job_id}: cancelled"
    shown = imagefleet("jobs", "get", job_id, *common, cwd=live.folder)
    assert shown.out.startswith(f"job {job_id}: cancelled, step 0/2")
