"""The control loop on a real store with the real local provider (its instances are real
processes) and a hand-driven clock: it scales with the queue, drains busy workers instead of
killing them, backs off a failing provider with the error in the pool's status, and replaces
quarantined nodes once.

The workers here are the test itself claiming through the lifecycle with each instance's node
id, as the worker in that process would: what the loop sees is the same database rows."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from imagefleet.config import Settings
from imagefleet.kinds.txt2img import Txt2ImgJob, Txt2ImgParams
from imagefleet.orchestrator.autoscaler import Autoscaler
from imagefleet.orchestrator.autoscaler_pools import PoolService
from imagefleet.orchestrator.lifecycle import JobLifecycle
from imagefleet.orchestrator.worker_claims import WorkerDraining
from imagefleet.protocol import JobStatus
from imagefleet.scaling.pools import parse_pools
from imagefleet.scaling.providers.retry import RetryPolicy
from imagefleet.scaling.wire import PoolEdit
from imagefleet.store import nodes as node_sql
from imagefleet.store.database import Database
from imagefleet.store.models import Model
from imagefleet.worker_protocol import (
    Assignment,
    ClaimRequest,
    CompletedOutput,
    CompleteRequest,
    HeartbeatRequest,
)
from tests.conftest import Clock, Keys, sqlite_url

SLEEPER = [sys.executable, "-c", "import time; time.sleep(300)"]


def local_pools(max_workers: int = 3) -> str:
    return f"""
[pools.cpu]
gpu = "cpu"
vram_mb = 1
price_per_hour = 0.36
max = {max_workers}
scale_down_cooldown_seconds = 60
idle_to_zero_seconds = 0
[pools.cpu.provider]
type = "local"
command = {json.dumps(SLEEPER)}
drain_grace_seconds = 0
"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """SQLite only: the loop's SQL is dialect-free; test_leader.py covers both dialects."""
    return Settings(data_dir=tmp_path / "data", database_url=sqlite_url(tmp_path), lease_seconds=10)


@pytest.fixture(autouse=True)
def _model(model: Model) -> None:
    """Every job here needs the `demo` model."""


def build(
    db: Database, settings: Settings, clock: Clock, text: str, policy: RetryPolicy | None = None
) -> tuple[Autoscaler, PoolService]:
    pools = PoolService(db, parse_pools(text), settings.lease_seconds)
    pools.seed(clock())
    return Autoscaler(db, settings, pools, policy=policy, clock=clock), pools


def submit(lifecycle: JobLifecycle, keys: Keys, n: int) -> list[str]:
    params = Txt2ImgParams(prompt="a cat", model="demo", width=64, height=64)
    return [lifecycle.submit(keys.alice, Txt2ImgJob(params=params))[0].id for _ in range(n)]


def claim(lifecycle: JobLifecycle, keys: Keys, node: str) -> Assignment:
    request = ClaimRequest(worker_id=f"w-{node}", node_id=node, pool="cpu")
    assignment = lifecycle.claim(keys.worker, request)
    assert assignment is not None
    return assignment


def complete(lifecycle: JobLifecycle, keys: Keys, assignment: Assignment) -> None:
    lifecycle.record_upload(
        keys.worker,
        assignment.attempt_id,
        index=0,
        key=f"jobs/{assignment.job_id}/{assignment.attempt_id}/0.png",
        size=10,
        sha256="0" * 64,
        content_type="image/png",
    )
    lifecycle.complete(
        keys.worker,
        assignment.attempt_id,
        CompleteRequest(outputs=[CompletedOutput(index=0, seed=1, width=64, height=64)]),
    )


def live(scaler: Autoscaler) -> list[str]:
    provider = scaler._runtime["cpu"].provider
    assert provider is not None
    return sorted(i.id for i in provider.list_instances() if i.state.value == "running")


def test_scale_in_removes_idle_workers_and_drains_a_busy_one_until_its_job_is_done(
    db: Database, settings: Settings, clock: Clock, keys: Keys, lifecycle: JobLifecycle
) -> None:
    scaler, pools = build(db, settings, clock, local_pools())
    try:
        submit(lifecycle, keys, 3)
        assert scaler.tick()
        nodes = live(scaler)
        assert len(nodes) == 3
        status = pools.view("cpu", clock()).status
        assert status is not None and status.desired == 3 and status.queued == 3
        assert "3 queued + 0 running -> 3" in status.reason

        first, busy, other = (claim(lifecycle, keys, node) for node in nodes)
        complete(lifecycle, keys, first)
        # An operator lowers the limit: one of the two busy workers has to go.
        pools.edit("cpu", PoolEdit(max=1), clock())
        clock.advance(61)  # past the cooldown
        scaler.tick()
        remaining = live(scaler)
        assert nodes[0] not in remaining and len(remaining) == 2  # the idle one went at once
        beats = {
            node: lifecycle.heartbeat(keys.worker, a.attempt_id, HeartbeatRequest()).drain
            for node, a in zip(nodes[1:], (busy, other), strict=True)
        }
        drained = [node for node, reason in beats.items() if reason]
        assert len(drained) == 1, beats  # told through its heartbeat, still running its job
        with pytest.raises(WorkerDraining):
            lifecycle.claim(keys.worker, ClaimRequest(worker_id="w2", node_id=drained[0]))

        scaler.tick()
        assert drained[0] in live(scaler)  # never removed while its job runs
        done = busy if drained[0] == nodes[1] else other
        complete(lifecycle, keys, done)
        scaler.tick()
        assert drained[0] not in live(scaler) and len(live(scaler)) == 1
        assert lifecycle.get(keys.alice, done.job_id).status is JobStatus.succeeded
        actions = [d.action for d in reversed(pools.decisions("cpu", 50))]
        assert actions[0] == "up" and "drain" in actions and actions[-1] == "down"
    finally:
        scaler.close()


def test_demand_that_returns_keeps_a_drained_worker_instead_of_starting_one(
    db: Database, settings: Settings, clock: Clock, keys: Keys, lifecycle: JobLifecycle
) -> None:
    scaler, pools = build(db, settings, clock, local_pools(max_workers=2))
    try:
        submit(lifecycle, keys, 2)
        scaler.tick()
        a, b = (claim(lifecycle, keys, node) for node in live(scaler))
        pools.edit("cpu", PoolEdit(max=1), clock())
        clock.advance(61)
        scaler.tick()  # both busy: one is drained, both stay
        assert len(live(scaler)) == 2
        before = set(live(scaler))
        pools.edit("cpu", PoolEdit(max=2), clock())
        scaler.tick()
        assert set(live(scaler)) == before  # kept, not replaced by a cold start
        assert all(
            lifecycle.heartbeat(keys.worker, x.attempt_id, HeartbeatRequest()).drain is None
            for x in (a, b)
        )
        assert "undrain" in [d.action for d in pools.decisions("cpu", 50)]
    finally:
        scaler.close()


def test_a_failing_provider_backs_off_shows_its_error_and_recovers(
    tmp_path: Path,
    db: Database,
    settings: Settings,
    clock: Clock,
    keys: Keys,
    lifecycle: JobLifecycle,
) -> None:
    flag = tmp_path / "cloud-is-up"
    script = (
        f"import pathlib, sys; up = pathlib.Path({str(flag)!r}).exists(); "
        "up or print('cloud API down', file=sys.stderr); sys.exit(0 if up else 75)"
    )
    text = f"""
[pools.spot]
gpu = "L4"
vram_mb = 23034
price_per_hour = 0.45
max = 4
[pools.spot.provider]
type = "command"
scale = {json.dumps([sys.executable, "-c", script])}
replace = ["true"]
"""
    scaler, pools = build(db, settings, clock, text, policy=RetryPolicy(attempts=1))
    submit(lifecycle, keys, 2)
    scaler.tick()
    status = pools.view("spot", clock()).status
    assert status is not None and status.failures == 1
    assert status.provider_error and "cloud API down" in status.provider_error
    assert status.next_try_at is not None
    errors = [d for d in pools.decisions("spot", 10) if d.action == "error"]
    assert len(errors) == 1 and errors[0].error

    scaler.tick()  # backing off: not called again yet, and nothing crashed
    assert pools.view("spot", clock()).status.failures == 1  # type: ignore[union-attr]

    flag.touch()
    clock.advance(60)
    scaler.tick()
    status = pools.view("spot", clock()).status
    assert status is not None and status.failures == 0 and status.provider_error is None
    assert status.desired == 2
    assert pools.decisions("spot", 10)[0].action == "up"


def test_a_quarantined_node_is_handed_to_its_provider_for_replacement_once(
    db: Database, settings: Settings, clock: Clock, keys: Keys, lifecycle: JobLifecycle
) -> None:
    scaler, pools = build(db, settings, clock, local_pools(max_workers=1))
    try:
        submit(lifecycle, keys, 1)
        scaler.tick()
        [bad] = live(scaler)
        claim(lifecycle, keys, bad)
        with db.write() as conn:
            node_sql.quarantine(conn, bad, "5 failed attempts", clock())
        scaler.tick()
        replaced = [d for d in pools.decisions("cpu", 10) if d.action == "replace"]
        assert [(d.node_id, d.instance_id) for d in replaced] == [(bad, bad)]
        assert bad not in live(scaler) and len(live(scaler)) == 1  # a fresh one instead
        scaler.tick()
        assert len([d for d in pools.decisions("cpu", 10) if d.action == "replace"]) == 1
    finally:
        scaler.close()
