"""`imagefleet up --max-workers 3` for real: the orchestrator's control loop starts worker
processes through the local provider as a burst of 50 jobs lands, up to the maximum, and stops
them after the cooldown; every job succeeds on its first attempt, so none was lost or killed
mid-run. The workers run the sleep engine (real processes, HTTP, uploads; no inference)."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest

from imagefleet.client import ImageFleetClient
from imagefleet.protocol import JobStatus
from tests.e2e.conftest import DB_FILE, FleetTemplate
from tests.harness.fleet import create_key
from tests.harness.ports import free_port
from tests.harness.processes import ManagedProcess, child_env, python_path

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
REPO = Path(__file__).resolve().parents[2]
JOBS = 50
MAX_WORKERS = 3
JOB = {"prompt": "burst", "model": "demo", "width": 64, "height": 64, "steps": 1}


def test_a_burst_scales_local_workers_to_the_max_and_back_to_zero_without_losing_a_job(
    tmp_path: Path, fleet_template: FleetTemplate
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for file in fleet_template.data_dir.glob(f"{DB_FILE}*"):
        shutil.copy2(file, data / file.name)
    (data / "client.key").write_text(fleet_template.keys.alice + "\n")
    (data / "worker.key").write_text(fleet_template.keys.worker + "\n")
    admin_key = create_key(data, "ops", "admin")
    port = free_port()
    env = child_env(
        PYTHONPATH=python_path(REPO),
        IMAGEFLEET_AUTOSCALE_INTERVAL_SECONDS="0.5",
        IMAGEFLEET_LEASE_SECONDS="10",
        IMAGEFLEET_WORKER_ENGINE="tests.chaos_engine:SleepEngine",
        IMAGEFLEET_CHAOS_SLEEP_MIN="0.3",
        IMAGEFLEET_CHAOS_SLEEP_MAX="0.5",
        IMAGEFLEET_WORKER_CLAIM_WAIT="2",
    )
    up = ManagedProcess(
        "up",
        [
            *(sys.executable, "-m", "imagefleet", "up"),
            *("--max-workers", str(MAX_WORKERS)),
            *("--scale-down-cooldown", "3"),
            *("--idle-to-zero", "0"),
            *("--port", str(port)),
            *("--data-dir", str(data)),
        ],
        env,
        tmp_path / "up.log",
        own_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        up.wait_for_log("imagefleet is up at", timeout=120)
        with (
            ImageFleetClient(url, fleet_template.keys.alice) as client,
            ImageFleetClient(url, admin_key) as admin,
        ):
            jobs = [client.submit_txt2img(JOB).id for _ in range(JOBS)]
            most = 0
            deadline = time.monotonic() + 200
            while not all(client.get(j).status.is_final for j in jobs):
                status = admin.pool("local").status
                most = max(most, status.actual or 0) if status else most
                assert time.monotonic() < deadline, up.log_tail()
                time.sleep(0.3)
            finished = [client.get(j) for j in jobs]
            assert [j.status for j in finished] == [JobStatus.succeeded] * JOBS
            # One attempt each: no job was handed back or killed by a scale-in.
            assert all([a.outcome.value for a in client.attempts(j)] == ["succeeded"] for j in jobs)
            assert most == MAX_WORKERS

            deadline = time.monotonic() + 60
            while True:
                status = admin.pool("local").status
                if status is not None and status.desired == 0 and status.actual == 0:
                    break
                assert time.monotonic() < deadline, (status, up.log_tail())
                time.sleep(0.3)
            decisions = admin.scaling_decisions("local", 100)
            assert any(d.action == "up" and d.desired == MAX_WORKERS for d in decisions)
            assert decisions[0].action == "down" and decisions[0].desired == 0
    finally:
        up.stop(grace=30)
