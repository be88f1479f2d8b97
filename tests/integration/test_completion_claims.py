"""A completion that carries the worker's next claim (`next`), on both stores: the claim runs
in the completion's transaction and its answer comes back with the completion's; it is made
only when the completion succeeds, honours the limits it names, and a quarantined or draining
node still gets its completion recorded."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy
from fastapi.testclient import TestClient
from sqlalchemy import event, select

from imagefleet.config import Settings
from imagefleet.kinds.txt2img import Txt2ImgJob, Txt2ImgParams
from imagefleet.orchestrator.app import create_app
from imagefleet.orchestrator.empty_looks import profile_of
from imagefleet.orchestrator.lifecycle import JobLifecycle
from imagefleet.store import nodes as node_sql
from imagefleet.store import workers as worker_sql
from imagefleet.store.database import Database
from imagefleet.store.models import Model
from imagefleet.store.tables import jobs
from imagefleet.worker_protocol import ClaimRequest
from tests.conftest import Clock, Keys
from tests.load import TINY_PNG, TINY_PNG_BASE64

PARAMS = {"prompt": "a lighthouse", "model": "demo", "width": 64, "height": 64, "steps": 2}
CLAIM = {"worker_id": "w", "node_id": "n"}
OUTPUT = {"index": 0, "seed": 7, "width": 64, "height": 64}
INLINE = {"outputs": [{**OUTPUT, "data_base64": TINY_PNG_BASE64}]}


@pytest.fixture
def api(settings: Settings, keys: Keys, model: Model) -> Iterator[TestClient]:
    with TestClient(create_app(settings, run_duties=False)) as client:
        yield client


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _submit(api: TestClient, keys: Keys, count: int = 1) -> list[str]:
    body = {"kind": "txt2img", "params": PARAMS}
    return [
        api.post("/v1/jobs", json=body, headers=_headers(keys.alice_token)).json()["id"]
        for _ in range(count)
    ]


def _claim(api: TestClient, keys: Keys) -> dict[str, Any]:
    answer = api.post("/v1/worker/claim", json=CLAIM, headers=_headers(keys.worker_token))
    assignment: dict[str, Any] = answer.json()["assignment"]
    return assignment


def _complete(api: TestClient, keys: Keys, attempt_id: str, next_claim: Any = CLAIM) -> Any:
    body = {**INLINE, "next": next_claim}
    path = f"/v1/worker/attempts/{attempt_id}/complete-inline"
    return api.post(path, json=body, headers=_headers(keys.worker_token))


def _status(api: TestClient, keys: Keys, job_id: str) -> str:
    status: str = api.get(f"/v1/jobs/{job_id}", headers=_headers(keys.alice_token)).json()["status"]
    return status


def test_the_next_job_comes_back_with_the_completion_in_one_transaction(
    api: TestClient, keys: Keys
) -> None:
    first_id, second_id = _submit(api, keys, 2)
    first = _claim(api, keys)
    assert first["job_id"] == first_id
    transactions: list[object] = []

    def began(conn: object) -> None:
        transactions.append(conn)

    event.listen(sqlalchemy.engine.Engine, "begin", began)
    try:
        answer = _complete(api, keys, first["attempt_id"])
    finally:
        event.remove(sqlalchemy.engine.Engine, "begin", began)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["job_status"] == "succeeded"
    handed = result["next"]["assignment"]
    assert handed["job_id"] == second_id and handed["attempt_id"] != first["attempt_id"]
    assert result["next"]["quarantined"] is None and result["next"]["drain"] is None
    assert len(transactions) == 1  # the completion and the claim, together
    assert _status(api, keys, first_id) == "succeeded"
    assert _status(api, keys, second_id) == "running"
    # The handed-out attempt is the worker's like any claimed one: it completes.
    done = _complete(api, keys, handed["attempt_id"])
    assert done.json()["job_status"] == "succeeded"
    assert done.json()["next"] == {
        "assignment": None,
        "more": [],
        "quarantined": None,
        "retry_after_seconds": 0.0,
        "drain": None,
    }  # nothing queued: the worker long-polls the claim as usual


def test_a_refused_or_repeated_completion_claims_nothing(api: TestClient, keys: Keys) -> None:
    first_id, waiting_id = _submit(api, keys, 2)
    first = _claim(api, keys)
    cancel = api.post(f"/v1/jobs/{first_id}/cancel", headers=_headers(keys.alice_token))
    assert cancel.status_code == 200
    refused = _complete(api, keys, first["attempt_id"])
    assert refused.status_code == 409, refused.text
    assert _status(api, keys, waiting_id) == "queued"  # the refused completion took nothing

    second = _claim(api, keys)
    assert second["job_id"] == waiting_id
    _submit(api, keys)
    assert _complete(api, keys, second["attempt_id"], None).json()["next"] is None
    repeated = _complete(api, keys, second["attempt_id"])
    assert repeated.json() == {"job_id": waiting_id, "job_status": "succeeded", "next": None}


def test_the_next_claim_honours_the_limits_it_names(api: TestClient, keys: Keys) -> None:
    _, waiting_id = _submit(api, keys, 2)
    first = _claim(api, keys)
    too_small = {**CLAIM, "capabilities": {"max_pixels": 32 * 32}}
    answer = _complete(api, keys, first["attempt_id"], too_small).json()
    assert answer["job_status"] == "succeeded"
    assert answer["next"]["assignment"] is None
    assert _status(api, keys, waiting_id) == "queued"


@pytest.mark.parametrize("block", ["quarantine", "drain"])
def test_a_blocked_node_gets_its_completion_recorded_and_no_next_job(
    api: TestClient, keys: Keys, db: Database, block: str
) -> None:
    first_id, waiting_id = _submit(api, keys, 2)
    first = _claim(api, keys)
    with db.write() as conn:
        if block == "quarantine":
            node_sql.quarantine(conn, "n", "test: bad GPU", 1.0)
        else:
            assert worker_sql.request_drain(conn, ["n"], "test: scaling in", 1.0) == 1
    answer = _complete(api, keys, first["attempt_id"])
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["job_status"] == "succeeded"
    assert result["next"]["assignment"] is None
    if block == "quarantine":
        assert result["next"]["quarantined"] == "test: bad GPU"
        assert result["next"]["retry_after_seconds"] == 60.0
    else:
        assert result["next"]["drain"] == "test: scaling in"
    assert _status(api, keys, first_id) == "succeeded"
    assert _status(api, keys, waiting_id) == "queued"


def test_a_plain_completion_after_uploads_carries_the_next_claim_too(
    api: TestClient, keys: Keys
) -> None:
    _, second_id = _submit(api, keys, 2)
    first = _claim(api, keys)
    at = f"/v1/worker/attempts/{first['attempt_id']}"
    worker = {**_headers(keys.worker_token), "Content-Type": "image/png"}
    assert api.put(f"{at}/outputs/0", content=TINY_PNG, headers=worker).status_code == 200
    body = {"outputs": [OUTPUT], "next": CLAIM}
    answer = api.post(f"{at}/complete", json=body, headers=_headers(keys.worker_token)).json()
    assert answer["job_status"] == "succeeded"
    assert answer["next"]["assignment"]["job_id"] == second_id


def test_the_next_claim_is_left_to_a_parked_claim_of_a_worker_like_it(
    api: TestClient, keys: Keys, settings: Settings
) -> None:
    """A worker like the completing one waits in a long poll: the completion looks at nothing
    (its statements are the completion's alone) and answers "nothing now"."""
    first = (_submit(api, keys), _claim(api, keys))[1]
    signal = api.app.state.work_signal  # type: ignore[attr-defined]
    profile = profile_of(ClaimRequest(**CLAIM))
    idle = {"worker_id": "idle", "node_id": "m", "wait_seconds": 5}
    polling = threading.Thread(
        target=api.post,
        args=("/v1/worker/claim",),
        kwargs={"json": idle, "headers": _headers(keys.worker_token)},
    )
    polling.start()
    deadline = time.monotonic() + 10
    while not signal.parked(profile) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert signal.parked(profile)
    statements: list[str] = []

    def sent(conn: object, cursor: object, statement: str, *rest: object) -> None:
        if not statement.startswith(("BEGIN", "SELECT pg_notify")):
            statements.append(statement)

    event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", sent)
    try:
        answer = _complete(api, keys, first["attempt_id"]).json()
    finally:
        event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", sent)
    assert answer["job_status"] == "succeeded"
    assert answer["next"]["assignment"] is None and answer["next"]["retry_after_seconds"] == 0
    postgresql = settings.database_url.startswith("postgresql")
    assert len(statements) == (1 if postgresql else 4), statements  # the completion alone
    _submit(api, keys)  # the parked claim takes it and ends its long poll
    polling.join(timeout=10)
    assert not polling.is_alive()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_claim_whose_matches_other_claims_hold_takes_the_next_job_past_them(
    lifecycle: JobLifecycle, keys: Keys, db: Database, model: Model, clock: Clock
) -> None:
    """PostgreSQL: each claim locks the candidates it ranks (SKIP LOCKED), so a claim racing it
    would see every job its look matched held. It looks past them instead of coming back
    empty while jobs wait (a backlog announces nothing that would wake it later). SQLite has
    no row locks: its claims run one at a time."""
    params = Txt2ImgParams(**PARAMS)
    oldest = []
    for _ in range(6):
        oldest.append(lifecycle.submit(keys.alice, Txt2ImgJob(params=params))[0].id)
        clock.advance(1.0)
    with db.engine.connect() as other, other.begin():
        head = oldest[:4]  # what a racing claim's head probe found, and holds
        other.execute(select(jobs.c.id).where(jobs.c.id.in_(head)).with_for_update()).all()
        taken = lifecycle.claim(keys.worker, ClaimRequest(**CLAIM))
        assert taken is not None and taken.job_id == oldest[4]
