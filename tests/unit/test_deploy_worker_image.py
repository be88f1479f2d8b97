"""The worker images' scripts: the warm-up runs the real demo pipeline on the worker's device
and fails with a reason an operator can act on; the entrypoint reads a mounted key file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.unit.deploy_support import ROOT, load

warmup = load("deploy/docker/bin/warmup.py")
ENTRYPOINT = ROOT / "deploy/docker/bin/worker-entrypoint"


def test_warm_up_runs_the_demo_pipeline_on_the_cpu() -> None:
    torch.set_num_threads(1)
    assert warmup.warm_up("cpu") > 0


def test_a_cuda_device_without_cuda_fails_with_what_to_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a node whose GPU is gone
    with pytest.raises(RuntimeError, match=r"no CUDA device.*GPU access"):
        warmup.pick_device("cuda")
    assert warmup.pick_device(None) == "cpu"
    assert warmup.pick_device("cpu") == "cpu"


def test_the_warm_up_exits_non_zero_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(warmup.DEVICE_ENV, "no-such-device")
    assert warmup.main() == 1


def entrypoint(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    bin_dir = str(Path(sys.executable).parent)  # the `imagefleet` command of this virtualenv
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args],
        env={"PATH": f"{bin_dir}:{os.environ['PATH']}", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_entrypoint_execs_the_worker_command(tmp_path: Path) -> None:
    key_file = tmp_path / "worker.key"
    key_file.write_text("if_test\n")
    result = entrypoint({"IMAGEFLEET_WORKER_KEY_FILE": str(key_file)}, "--help")
    assert result.returncode == 0, result.stderr
    assert "Pull jobs from an orchestrator" in result.stdout


def test_the_entrypoint_stops_when_the_key_file_is_missing(tmp_path: Path) -> None:
    result = entrypoint({"IMAGEFLEET_WORKER_KEY_FILE": str(tmp_path / "absent")}, "--help")
    assert result.returncode != 0
    assert "absent" in result.stderr
