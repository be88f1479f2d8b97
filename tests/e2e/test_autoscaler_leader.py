"""Two orchestrator processes on one database: only the one holding the leader lease scales;
killed, it is replaced by the other once its lease has expired, within one more lease, and
never while it still held it. The pool's provider is a `command` script that logs which
orchestrator called it and the replica count."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from imagefleet.client import ImageFleetClient
from imagefleet.store.database import Database
from imagefleet.store.tables_autoscaling import leader_leases
from tests.e2e.conftest import DB_FILE, FleetTemplate
from tests.harness.orchestrator import OrchestratorProcess
from tests.harness.processes import child_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
LEASE_SECONDS = 5.0
JOB = {"prompt": "scale me", "model": "demo", "width": 64, "height": 64, "steps": 1}


def scale_calls(log: Path) -> list[tuple[str, int]]:
    """(name of the orchestrator that scaled, replicas) per scale call so far."""
    if not log.exists():
        return []
    return [(a, int(b)) for a, b in (line.split() for line in log.read_text().splitlines())]


def wait_for(what: str, check: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not {what} within {timeout}s"
        time.sleep(0.2)


def test_only_the_leader_scales_and_the_other_replica_takes_over_when_it_dies(
    tmp_path: Path, fleet_template: FleetTemplate
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for file in fleet_template.data_dir.glob(f"{DB_FILE}*"):
        shutil.copy2(file, data / file.name)
    calls = tmp_path / "scale-calls.log"
    script = (
        f"import os; out = open({str(calls)!r}, 'a'); "
        "out.write(os.environ['SCALER'] + ' ' + os.environ['IMAGEFLEET_REPLICAS'] + '\\n')"
    )
    pools = tmp_path / "pools.toml"
    pools.write_text(
        f"""
[pools.spot]
gpu = "L4"
vram_mb = 23034
price_per_hour = 0.45
max = 10
[pools.spot.provider]
type = "command"
scale = {json.dumps([sys.executable, "-c", script])}
replace = ["true"]
"""
    )
    settings = {
        "IMAGEFLEET_POOLS_FILE": str(pools),
        "IMAGEFLEET_AUTOSCALE_INTERVAL_SECONDS": "0.5",
        "IMAGEFLEET_LEADER_LEASE_SECONDS": str(LEASE_SECONDS),
    }
    first, second = (
        # The scripts inherit the orchestrator's environment: SCALER says whose call it was.
        OrchestratorProcess(
            tmp_path, env=child_env(SCALER=name, **settings), data_dir=data, name=name
        ).start()
        for name in ("first", "second")
    )
    db = Database(f"sqlite:///{data / DB_FILE}")
    try:
        with ImageFleetClient(first.url, fleet_template.keys.alice) as client:
            for _ in range(2):
                client.submit_txt2img(JOB)
            wait_for("scaled to 2", lambda: any(n == 2 for _, n in scale_calls(calls)))
            time.sleep(3)  # several passes of both replicas
            leaders = {name for name, _ in scale_calls(calls)}
            assert len(leaders) == 1, scale_calls(calls)
            leader, follower = (first, second) if "first" in leaders else (second, first)

            with db.read() as conn:
                held = conn.execute(select(leader_leases)).one()
            assert f"-{leader.pid}-" in held.holder
            leader.kill()
            with db.read() as conn:  # its last renewal, now frozen
                last = conn.execute(select(leader_leases)).one()

        with ImageFleetClient(follower.url, fleet_template.keys.alice) as client:
            client.submit_txt2img(JOB)
            wait_for("taken over", lambda: (follower.name, 3) in scale_calls(calls))
        with db.read() as conn:
            taken = conn.execute(select(leader_leases)).one()
        assert f"-{follower.pid}-" in taken.holder
        # Never two leaders: it took the lease only once the dead one's had expired ...
        assert taken.acquired_at >= last.expires_at
        # ... and within one more lease of that.
        assert taken.acquired_at - last.expires_at < LEASE_SECONDS
        assert {name for name, _ in scale_calls(calls)} == {"first", "second"}
    finally:
        db.dispose()
        first.stop()
        second.stop()
