"""Micro-batch claims: one claim may take several jobs with the same batch key, each its own
attempt (lease, fencing token), on both dialects; and under concurrent batch claimers on
PostgreSQL no job is ever in two attempts."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from imagefleet.config import Settings
from imagefleet.kinds.txt2img import Txt2ImgJob, Txt2ImgParams
from imagefleet.orchestrator.app import create_app
from imagefleet.orchestrator.lifecycle import JobLifecycle
from imagefleet.protocol import JobStatus
from imagefleet.store.database import Database
from imagefleet.store.models import Model
from imagefleet.store.tables import attempts, jobs
from imagefleet.worker_protocol import Assignment, ClaimRequest
from tests.conftest import Clock, Keys


def submit(lifecycle: JobLifecycle, keys: Keys, **params: object) -> str:
    fields: dict[str, object] = {"prompt": "a cat", "model": "demo", "width": 64, "height": 64}
    job = Txt2ImgJob(params=Txt2ImgParams.model_validate({**fields, **params}))
    return lifecycle.submit(keys.alice, job)[0].id


def claim(
    lifecycle: JobLifecycle, keys: Keys, max_jobs: int, worker: str = "w"
) -> list[Assignment]:
    request = ClaimRequest(worker_id=worker, node_id=f"node-{worker}", max_jobs=max_jobs)
    return lifecycle.claim_batch(keys.worker, request)


def test_a_claim_takes_up_to_max_jobs_with_the_same_batch_key_each_its_own_attempt(
    lifecycle: JobLifecycle, keys: Keys, model: Model, db: Database, clock: Clock
) -> None:
    same = []
    for i in range(5):
        same.append(submit(lifecycle, keys, prompt=f"cat {i}", seed=i))
        clock.advance(1.0)
    other_steps = submit(lifecycle, keys, steps=12)
    other_sampler = submit(lifecycle, keys, scheduler="euler")
    self_seeded = submit(lifecycle, keys, scheduler="dpmpp_sde")

    first = claim(lifecycle, keys, 4)

    assert [a.job_id for a in first] == same[:4]  # the oldest; then its oldest mates
    assert len({a.attempt_id for a in first}) == 4
    assert all(a.fencing_token == 1 and a.lease_expires_at for a in first)
    assert all(a.placement == f"micro-batch with job {same[0]}" for a in first[1:])
    assert [a.params["prompt"] for a in first] == [f"cat {i}" for i in range(4)]
    with db.read() as conn:
        running = set(conn.execute(select(jobs.c.id).where(jobs.c.status == "running")).scalars())
        assert running == set(same[:4])
        per_job = dict(
            conn.execute(select(attempts.c.job_id, func.count()).group_by(attempts.c.job_id)).all()
        )
        assert per_job == {job_id: 1 for job_id in same[:4]}
    # What is left: the fifth alone (nothing else shares its key), then each odd one alone.
    assert [a.job_id for a in claim(lifecycle, keys, 4)] == [same[4]]
    rest = [claim(lifecycle, keys, 4) for _ in range(3)]
    assert sorted(a[0].job_id for a in rest) == sorted([other_steps, other_sampler, self_seeded])
    assert all(len(a) == 1 for a in rest)
    assert claim(lifecycle, keys, 4) == []


def test_the_default_claim_takes_one_job(lifecycle: JobLifecycle, keys: Keys, model: Model) -> None:
    for i in range(3):
        submit(lifecycle, keys, seed=i)
    assert len(claim(lifecycle, keys, 1)) == 1
    assert lifecycle.claim(keys.worker, ClaimRequest(worker_id="w", node_id="n", max_jobs=4))
    # `claim` (one job) ignores max_jobs: one job is left.
    assert len(claim(lifecycle, keys, 8)) == 1


def test_the_api_answers_more_and_bounds_max_jobs(
    settings: Settings, keys: Keys, model: Model
) -> None:
    worker = {"Authorization": f"Bearer {keys.worker_token}"}
    client = {"Authorization": f"Bearer {keys.alice_token}"}
    params = {"prompt": "x", "model": "demo", "width": 64, "height": 64, "steps": 2}
    with TestClient(create_app(settings, run_duties=False)) as api:
        ids = [
            api.post("/v1/jobs", json={"kind": "txt2img", "params": params}, headers=client).json()[
                "id"
            ]
            for _ in range(3)
        ]
        body = {"worker_id": "w", "node_id": "n", "max_jobs": 9}
        assert api.post("/v1/worker/claim", json=body, headers=worker).status_code == 422
        body["max_jobs"] = 3
        answer = api.post("/v1/worker/claim", json=body, headers=worker).json()
        assert [answer["assignment"]["job_id"]] + [a["job_id"] for a in answer["more"]] == ids
        for assignment in [answer["assignment"], *answer["more"]]:
            beat = api.post(
                f"/v1/worker/attempts/{assignment['attempt_id']}/heartbeat",
                json={"step": 1, "total_steps": 2},
                headers=worker,
            )
            assert beat.json()["action"] == "continue"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_concurrent_batch_claimers_never_share_a_job(
    lifecycle: JobLifecycle, keys: Keys, model: Model, db: Database
) -> None:
    total = 60
    for i in range(total):
        # Three batch keys, interleaved, so claimers compete for the same mates.
        submit(lifecycle, keys, seed=i, steps=2 + i % 3)
    taken: list[list[str]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def claimer(name: str) -> None:
        try:
            while True:
                got = claim(lifecycle, keys, 4, worker=name)
                if not got:
                    return
                steps = {a.params["steps"] for a in got}
                assert len(steps) == 1, steps  # one batch key per batch
                with lock:
                    taken.append([a.job_id for a in got])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    claimed = Counter(job_id for batch in taken for job_id in batch)
    assert len(claimed) == total and set(claimed.values()) == {1}
    assert any(len(batch) > 1 for batch in taken)
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(attempts)).scalar() == total
        statuses = set(conn.execute(select(jobs.c.status)).scalars())
    assert statuses == {JobStatus.running.value}
