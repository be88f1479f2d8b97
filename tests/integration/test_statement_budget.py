"""The SQL a job's lifecycle costs over HTTP, counted: each worker and client call is one
transaction with a handful of statements (issue 16's budget). A change that adds a read to the
hot path fails here, with the statements listed, instead of showing up weeks later as a slower
benchmark. Counts, not timings: deterministic."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.engine.default import CACHE_HIT

from imagefleet.config import Settings
from imagefleet.orchestrator.app import create_app
from imagefleet.store.models import Model
from tests.conftest import Keys
from tests.load import TINY_PNG_BASE64

PARAMS = {"prompt": "a lighthouse", "model": "demo", "width": 64, "height": 64, "steps": 2}
# Statements (BEGIN not counted) and transactions per call, exactly (a change that saves one
# updates this table). PostgreSQL folds each call's writes into one statement
# (store/folded*.py): 8 in all (issue 16's goal: at most 12). SQLite runs the same writes one
# by one, in process. The submit's NOTIFY (other replicas' parked claims) is checked apart; each
# event row's NOTIFY (their event streams) is sent by the row's insert trigger.
BUDGET = {
    "postgresql": {"submit": (3, 1), "claim": (3, 1), "heartbeat": (1, 1), "complete": (1, 1)},
    "sqlite": {"submit": (5, 1), "claim": (6, 1), "heartbeat": (3, 1), "complete": (4, 1)},
}
# A completion that carries the next claim (as the real worker sends it): both in one
# transaction, so a lifecycle in a busy fleet is submit, heartbeat and complete + claim.
for _calls in BUDGET.values():
    _calls["complete + claim"] = (_calls["complete"][0] + _calls["claim"][0], 1)


@pytest.fixture
def api(settings: Settings, keys: Keys, model: Model) -> Iterator[TestClient]:
    with TestClient(create_app(settings, run_duties=False)) as client:
        yield client


class Recorder:
    """Every statement any engine of this process sends (BEGINs apart: transactions are
    counted by SQLAlchemy's begin event), NOTIFYs counted apart (a NOTIFY of its own is no
    statement of the budget; one folded into a submit's statement is counted as a NOTIFY too)."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.transactions = 0
        self.notifies = 0
        # Statements SQLAlchemy compiled for this execution (no cached compilation to use):
        # each costs a compile, about 1 ms of Python for a claim's look.
        self.compiled: list[str] = []

    def __call__(
        self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        if "pg_notify(" in statement:
            self.notifies += 1
        if not statement.startswith(("BEGIN", "SELECT pg_notify")):
            self.statements.append(" ".join(statement.split())[:120])
        compiled = context is not None and context.compiled is not None
        if compiled and context.cache_hit is not CACHE_HIT:
            self.compiled.append(f"{context.cache_hit.name}: {' '.join(statement.split())}")

    def on_begin(self, conn: Any) -> None:
        self.transactions += 1

    def take(self) -> tuple[int, int, int, list[str]]:
        taken = len(self.statements), self.transactions, self.notifies, self.statements
        self.statements, self.transactions, self.notifies = [], 0, 0
        return taken


def _lifecycle(api: TestClient, keys: Keys, model: Model, follow: bool = False) -> Iterator[str]:
    """A lifecycle over HTTP, naming each call once it has returned; the worker is warm (the
    job's checkpoint on its GPU), as a fleet's workers are after their first job. With
    `follow`, a second job is queued and the completion carries the next claim, which takes
    it ("complete + claim"); that job is left running."""
    client = {"Authorization": f"Bearer {keys.alice_token}"}
    worker = {"Authorization": f"Bearer {keys.worker_token}"}
    body = {"kind": "txt2img", "params": PARAMS}
    assert api.post("/v1/jobs", json=body, headers=client).status_code == 201
    yield "submit"
    warm = {"worker_id": "w", "node_id": "n", "resident_models": [model.sha256]}
    claimed = api.post("/v1/worker/claim", json=warm, headers=worker)
    attempt = claimed.json()["assignment"]["attempt_id"]
    yield "claim"
    if follow:
        assert api.post("/v1/jobs", json=body, headers=client).status_code == 201
        yield "submit"
    beat = api.post(
        f"/v1/worker/attempts/{attempt}/heartbeat",
        json={"step": 1, "total_steps": 2},
        headers=worker,
    )
    assert beat.status_code == 200
    yield "heartbeat"
    output = {"index": 0, "seed": 1, "width": 64, "height": 64, "data_base64": TINY_PNG_BASE64}
    completion: dict[str, Any] = {"outputs": [output]}
    if follow:
        completion["next"] = warm
    done = api.post(
        f"/v1/worker/attempts/{attempt}/complete-inline", json=completion, headers=worker
    )
    assert done.json()["job_status"] == "succeeded"
    if follow:
        assert done.json()["next"]["assignment"] is not None
        yield "complete + claim"
    else:
        yield "complete"


def _warm(api: TestClient, keys: Keys, model: Model) -> None:
    """Two lifecycles first. The first fills the per-process caches; its claim records the
    worker's report, so the second's submit reads the fleet again (`orchestrator.seen_workers`),
    the third's not (the snapshot made to outlast a slow machine's pauses: counts, not
    timings). The first claim also reads the ids of the worker's checkpoints, which the replica
    then remembers (`orchestrator.checkpoint_ids`)."""
    api.app.state.lifecycle.seen_workers.fresh_seconds = 3600.0  # type: ignore[attr-defined]
    for _ in range(2):
        for _ in _lifecycle(api, keys, model):
            pass


def test_each_call_of_a_lifecycle_is_one_transaction_within_its_statement_budget(
    api: TestClient, keys: Keys, settings: Settings, model: Model
) -> None:
    _warm(api, keys, model)
    postgresql = settings.database_url.startswith("postgresql")
    measured = _measured(api, _lifecycle(api, keys, model))
    _check(measured, postgresql)
    if postgresql:
        assert sum(taken[0] for taken in measured.values()) <= 12


def test_a_completion_that_claims_the_next_job_is_one_transaction(
    api: TestClient, keys: Keys, settings: Settings, model: Model
) -> None:
    _warm(api, keys, model)
    measured = _measured(api, _lifecycle(api, keys, model, follow=True))
    assert "complete + claim" in measured
    _check(measured, settings.database_url.startswith("postgresql"))


def test_a_warm_lifecycle_compiles_no_statement(
    api: TestClient, keys: Keys, settings: Settings, model: Model
) -> None:
    """Every statement of a warm lifecycle, the claim's look and the completion's claim
    included, comes from SQLAlchemy's compiled cache. A statement without a cache key (a custom
    SQL element that does not declare its state, say) is compiled on every execution: the
    claim's look was, 25% of a server's CPU (docs/benchmarks.md)."""
    _warm(api, keys, model)
    for _ in _lifecycle(api, keys, model, follow=True):
        pass
    recorder = Recorder()
    for call in _recorded(api, recorder, _lifecycle(api, keys, model, follow=True)):
        assert not recorder.compiled, (call, recorder.compiled)


def _measured(api: TestClient, calls: Iterator[str]) -> dict[str, tuple[int, int, int, list[str]]]:
    """What each call of `calls` sent, by its name (the last of a repeated name)."""
    recorder = Recorder()
    measured: dict[str, tuple[int, int, int, list[str]]] = {}
    for call in _recorded(api, recorder, calls):
        measured[call] = recorder.take()
    return measured


def _recorded(api: TestClient, recorder: Recorder, calls: Iterator[str]) -> Iterator[str]:
    """`calls`, with every statement the app's engine sends recorded by `recorder` (only this
    app's: a thread of an earlier test's server in the same process is no part of it)."""
    engine = api.app.state.db.engine  # type: ignore[attr-defined]
    event.listen(engine, "before_cursor_execute", recorder)
    event.listen(engine, "begin", recorder.on_begin)
    try:
        recorder.take()
        yield from calls
    finally:
        event.remove(engine, "before_cursor_execute", recorder)
        event.remove(engine, "begin", recorder.on_begin)


def _check(measured: dict[str, tuple[int, int, int, list[str]]], postgresql: bool) -> None:
    budget = BUDGET["postgresql" if postgresql else "sqlite"]
    for call, (statements, transactions, notifies, listed) in measured.items():
        allowed = budget[call][0]
        assert statements == allowed, f"{call}: {statements} statements, not {allowed}: {listed}"
        assert transactions == budget[call][1], f"{call}: {transactions} transactions: {listed}"
        assert notifies == (postgresql and call == "submit"), (call, notifies)
