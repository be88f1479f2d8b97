"""The command provider runs real scripts with the documented variables, exit codes and
timeout. The scripts here are small Python programs that record what they were given."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from imagefleet.scaling.pools import CommandSettings
from imagefleet.scaling.providers.base import (
    InstanceState,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)
from imagefleet.scaling.providers.command import CommandProvider
from imagefleet.scaling.providers.retry import RetryPolicy

RECORD = (
    "import json, os, sys; "
    "open(sys.argv[1], 'a').write(json.dumps({k: v for k, v in os.environ.items() "
    "if k.startswith('IMAGEFLEET_') or k == 'CLOUD'}) + '\\n')"
)


def script(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


def provider(
    tmp_path: Path, sleeps: list[float] | None = None, **fields: object
) -> CommandProvider:
    log = str(tmp_path / "calls.jsonl")
    settings = CommandSettings.model_validate(
        {
            "type": "command",
            "scale": script(RECORD, log),
            "replace": script(RECORD, log),
            "env": {"CLOUD": "acme"},
            **fields,
        }
    )
    record = sleeps.append if sleeps is not None else (lambda _: None)
    return CommandProvider("spot", settings, sleep=record)


def calls(tmp_path: Path) -> list[dict[str, str]]:
    lines = (tmp_path / "calls.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_scale_passes_the_pool_and_replicas_in_the_environment(tmp_path: Path) -> None:
    provider(tmp_path).scale_to(7)
    (call,) = calls(tmp_path)
    assert call["IMAGEFLEET_POOL"] == "spot"
    assert call["IMAGEFLEET_REPLICAS"] == "7"
    assert call["CLOUD"] == "acme"


def test_replace_and_drain_pass_the_instance_id(tmp_path: Path) -> None:
    log = str(tmp_path / "calls.jsonl")
    command = provider(tmp_path, drain=script(RECORD, log))
    command.replace("vm-3")
    command.drain("vm-4")
    assert [c["IMAGEFLEET_INSTANCE_ID"] for c in calls(tmp_path)] == ["vm-3", "vm-4"]


def test_without_a_drain_script_drain_does_nothing(tmp_path: Path) -> None:
    provider(tmp_path).drain("vm-1")
    assert not (tmp_path / "calls.jsonl").exists()


def test_instances_are_read_from_the_scripts_json(tmp_path: Path) -> None:
    listing = [
        {"id": "vm-1", "node_id": "host-1", "state": "running", "started_at": 1700000000},
        {"id": "vm-2"},
    ]
    command = provider(tmp_path, instances=script(f"print({json.dumps(listing)!r})"))
    one, two = command.list_instances()
    assert (one.id, one.node_id, one.state, one.started_at) == (
        "vm-1",
        "host-1",
        InstanceState.running,
        1700000000.0,
    )
    assert (two.id, two.node_id, two.state) == ("vm-2", None, InstanceState.running)


def test_without_an_instances_script_there_are_none(tmp_path: Path) -> None:
    assert provider(tmp_path).list_instances() == []


def test_bad_instance_json_is_rejected_with_what_was_printed(tmp_path: Path) -> None:
    with pytest.raises(ProviderRejected) as caught:
        provider(tmp_path, instances=script("print('not json')")).list_instances()
    assert "'not json" in str(caught.value)
    bad_state = script('print(\'[{"id": "a", "state": "exploded"}]\')')
    with pytest.raises(ProviderRejected) as caught:
        provider(tmp_path, instances=bad_state).list_instances()
    assert "state must be one of starting, running" in str(caught.value)


def test_a_failing_script_reports_its_status_and_stderr(tmp_path: Path) -> None:
    failing = script("import sys; sys.stderr.write('quota exceeded in us-east\\n'); sys.exit(3)")
    with pytest.raises(ProviderRejected) as caught:
        provider(tmp_path, scale=failing).scale_to(2)
    assert "exited with status 3: quota exceeded in us-east" in str(caught.value)


def test_exit_75_is_temporary_and_retried(tmp_path: Path) -> None:
    counter = tmp_path / "tries"
    flaky = script(
        "import pathlib, sys; p = pathlib.Path(sys.argv[1]); n = int(p.read_text() or 0) "
        "if p.exists() else 0; p.write_text(str(n + 1)); sys.exit(75 if n < 2 else 0)",
        str(counter),
    )
    sleeps: list[float] = []
    provider(tmp_path, sleeps, scale=flaky).scale_to(1)
    assert counter.read_text() == "3"
    assert len(sleeps) == 2
    always = script("import sys; sys.exit(75)")
    with pytest.raises(ProviderUnavailable):
        provider(tmp_path, scale=always).scale_to(1)


def test_a_script_past_its_timeout_is_killed(tmp_path: Path) -> None:
    settings = CommandSettings(
        type="command",
        scale=script("import time; time.sleep(60)"),
        replace=["true"],
        timeout_seconds=0.5,
    )
    command = CommandProvider("spot", settings, policy=RetryPolicy(attempts=1))
    with pytest.raises(ProviderTimeout) as caught:
        command.scale_to(1)
    assert "ran past its 0.5s timeout; killed" in str(caught.value)


def test_a_missing_program_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ProviderRejected) as caught:
        provider(tmp_path, scale=["/nonexistent/scale-it"]).scale_to(1)
    assert "cannot run '/nonexistent/scale-it'" in str(caught.value)
