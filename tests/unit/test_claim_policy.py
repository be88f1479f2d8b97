"""The scheduling policy in the real claim path: preselection by index probes, ranking by the
pure policy, placement reasons, the bounded wait for a warm worker, the explainable queue."""

from __future__ import annotations

import pytest

from imagefleet.config import Settings
from imagefleet.kinds.txt2img import Txt2ImgJob, Txt2ImgParams
from imagefleet.orchestrator.lifecycle import JobLifecycle
from imagefleet.protocol import JobStatus
from imagefleet.store import worker_state
from imagefleet.store.database import Database
from imagefleet.store.keys import ApiKey, create_key
from imagefleet.store.models import Model, register_model
from imagefleet.worker_protocol import (
    Assignment,
    ClaimRequest,
    CompletedOutput,
    CompleteRequest,
    WorkerCapabilities,
)
from tests.conftest import Clock, Keys

BIG = 2_000_000_000  # a 2 GB checkpoint: downloading one takes a worker several seconds


@pytest.fixture
def checkpoints(db: Database) -> dict[str, Model]:
    made = {}
    with db.write() as conn:
        for name, fill in (("alpha", "a"), ("beta", "b")):
            made[name] = register_model(
                conn,
                name=name,
                kind="checkpoint",
                source=f"/models/{name}",
                sha256=fill * 64,
                size_bytes=BIG,
                now=1.0,
            )
    return made


def submit(lifecycle: JobLifecycle, owner: ApiKey, model: str = "alpha", size: int = 64) -> str:
    params = {"prompt": "a cat", "model": model, "width": size, "height": size, "steps": 2}
    job = Txt2ImgJob(params=Txt2ImgParams.model_validate(params))
    return lifecycle.submit(owner, job)[0].id


def claim(
    lifecycle: JobLifecycle,
    keys: Keys,
    worker: str = "w1",
    *,
    resident: Model | None = None,
    combo: str | None = None,
    cached: tuple[Model, ...] = (),
    max_pixels: int = 512 * 512,
) -> Assignment | None:
    request = ClaimRequest(
        worker_id=worker,
        node_id=f"node-{worker}",
        capabilities=WorkerCapabilities(max_pixels=max_pixels),
        resident_combos=[combo] if combo else [],
        resident_models=[resident.sha256] if resident else [],
        cached_models=[model.sha256 for model in cached],
    )
    return lifecycle.claim(keys.worker, request)


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


def test_a_worker_gets_the_job_whose_combo_it_holds_and_the_job_records_why(
    lifecycle: JobLifecycle, keys: Keys, checkpoints: dict[str, Model], clock: Clock
) -> None:
    submit(lifecycle, keys.alice, "alpha")
    clock.advance(1)
    warm_job = submit(lifecycle, keys.alice, "beta")
    combo = lifecycle.get(keys.alice, warm_job).combo_key
    assignment = claim(lifecycle, keys, resident=checkpoints["beta"], combo=combo)
    assert assignment is not None and assignment.job_id == warm_job
    assert assignment.placement is not None and "combo resident" in assignment.placement
    assert lifecycle.get(keys.alice, warm_job).placement == assignment.placement


def test_the_fifo_policy_hands_out_the_oldest_job_whatever_the_worker_holds(
    db: Database, settings: Settings, keys: Keys, checkpoints: dict[str, Model], clock: Clock
) -> None:
    fifo = JobLifecycle(db, settings.model_copy(update={"policy": "fifo"}), clock=clock)
    oldest = submit(fifo, keys.alice, "alpha")
    clock.advance(1)
    warm_job = submit(fifo, keys.alice, "beta")
    combo = fifo.get(keys.alice, warm_job).combo_key
    assignment = claim(fifo, keys, resident=checkpoints["beta"], combo=combo)
    assert assignment is not None and assignment.job_id == oldest
    assert assignment.placement == "oldest job (FIFO)"


def test_a_job_far_behind_the_queue_head_is_found_when_the_worker_holds_its_checkpoint(
    lifecycle: JobLifecycle, keys: Keys, checkpoints: dict[str, Model], clock: Clock
) -> None:
    for _ in range(60):
        submit(lifecycle, keys.alice, "alpha")
    clock.advance(1)
    warm_job = submit(lifecycle, keys.alice, "beta")
    assignment = claim(lifecycle, keys, resident=checkpoints["beta"])
    assert assignment is not None and assignment.job_id == warm_job
    assert assignment.placement is not None and "models resident" in assignment.placement


def test_one_clients_single_job_is_not_stuck_behind_another_clients_batch(
    lifecycle: JobLifecycle, db: Database, keys: Keys, checkpoints: dict[str, Model], clock: Clock
) -> None:
    with db.write() as conn:
        carol, _ = create_key(conn, name="carol", scope="client", tier="free", now=1.0)
    batch = []
    for _ in range(40):
        batch.append(submit(lifecycle, keys.alice))
        clock.advance(0.01)
    single = submit(lifecycle, carol)
    clock.advance(1)
    claimed = []
    for _ in range(3):
        assignment = claim(lifecycle, keys, cached=(checkpoints["alpha"],))
        assert assignment is not None
        claimed.append(assignment.job_id)
    assert claimed[0] == batch[0]
    assert single in claimed[:2], "round robin between owners: carol's turn comes second"


def test_a_cold_worker_leaves_a_job_to_a_busy_worker_that_holds_its_combo_for_a_bounded_time(
    lifecycle: JobLifecycle, keys: Keys, checkpoints: dict[str, Model], clock: Clock
) -> None:
    first = submit(lifecycle, keys.alice, "alpha")
    combo = lifecycle.get(keys.alice, first).combo_key
    alpha = checkpoints["alpha"]
    running = claim(lifecycle, keys, "warm", resident=alpha, combo=combo)
    assert running is not None and running.job_id == first
    second = submit(lifecycle, keys.alice, "alpha")
    # The cold worker would need a 2 GB download; the warm one is expected free in a moment.
    assert claim(lifecycle, keys, "cold") is None
    queued = lifecycle.queue_view(lifecycle.get(keys.alice, second))
    assert queued is not None and "holds model alpha" in queued.reason
    complete(lifecycle, keys, running)
    again = claim(lifecycle, keys, "warm", resident=alpha, combo=combo)
    assert again is not None and again.job_id == second
    assert again.placement is not None and "combo resident" in again.placement
    # A warm worker much later than expected is not waited for.
    third = submit(lifecycle, keys.alice, "alpha")
    clock.advance(60)
    taken = claim(lifecycle, keys, "cold")
    assert taken is not None and taken.job_id == third


def test_a_queued_job_says_why_it_waits_and_how_many_jobs_are_ahead(
    lifecycle: JobLifecycle, keys: Keys, checkpoints: dict[str, Model], clock: Clock
) -> None:
    jobs = []
    for _ in range(3):
        jobs.append(submit(lifecycle, keys.alice))
        clock.advance(1)
    view = lifecycle.queue_view(lifecycle.get(keys.alice, jobs[2]))
    assert view is not None and view.reason == "no worker that runs txt2img at 4096 pixels online"
    assert (view.ahead, view.ahead_own) == (2, 2)
    assert claim(lifecycle, keys, cached=(checkpoints["alpha"],)) is not None
    view = lifecycle.queue_view(lifecycle.get(keys.alice, jobs[2]))
    assert view is not None and view.reason == "behind 1 jobs of your own"
    assert lifecycle.queue_view(lifecycle.get(keys.alice, jobs[0])) is None  # running


def test_a_job_no_seen_worker_can_run_is_flagged_at_submit_and_failed_with_the_reason_later(
    lifecycle: JobLifecycle, keys: Keys, checkpoints: dict[str, Model], clock: Clock
) -> None:
    assert claim(lifecycle, keys, "small", max_pixels=64 * 64) is None  # seen, nothing to do
    too_big = lifecycle.get(keys.alice, submit(lifecycle, keys.alice, size=128))
    expected = "no worker seen in the last 24 h takes 16384 pixels (largest: 4096)"
    assert too_big.warning == expected
    fits = lifecycle.get(keys.alice, submit(lifecycle, keys.alice, size=64))
    assert fits.warning is None
    clock.advance(lifecycle.settings.unservable_after_seconds - 1)
    assert lifecycle.fail_unservable() == 0
    clock.advance(2)
    assert lifecycle.fail_unservable() == 1
    failed = lifecycle.get(keys.alice, too_big.id)
    assert failed.status is JobStatus.failed
    assert (failed.error_code, failed.error_message) == ("no_eligible_worker", expected)


def test_a_flagged_job_that_a_worker_seen_since_could_run_stays_queued(
    lifecycle: JobLifecycle, keys: Keys, checkpoints: dict[str, Model], clock: Clock
) -> None:
    assert claim(lifecycle, keys, "small", max_pixels=64 * 64) is None
    flagged = submit(lifecycle, keys.alice, size=128)
    assert lifecycle.get(keys.alice, flagged).warning is not None
    clock.advance(lifecycle.settings.unservable_after_seconds + 1)
    # A bigger worker reports in (its claim's state), busy elsewhere before it takes the job.
    big = ClaimRequest(worker_id="big", node_id="node-big")
    with lifecycle.db.write() as conn:
        worker_state.record(conn, big, clock())
    assert lifecycle.fail_unservable() == 0
    row = lifecycle.get(keys.alice, flagged)
    assert row.status is JobStatus.queued and row.warning is None


@pytest.mark.parametrize(("share", "second"), [(0, "paid"), (1, "free")])
def test_a_paid_client_with_its_share_running_loses_the_head_start_to_a_free_job(
    db: Database,
    settings: Settings,
    keys: Keys,
    checkpoints: dict[str, Model],
    clock: Clock,
    share: int,
    second: str,
) -> None:
    lifecycle = JobLifecycle(db, settings.model_copy(update={"head_start_jobs": share}), clock)
    first = submit(lifecycle, keys.bob)  # bob is paid, alice free
    clock.advance(1)
    paid = submit(lifecycle, keys.bob)
    clock.advance(1)
    free = submit(lifecycle, keys.alice)
    clock.advance(1)
    running = claim(lifecycle, keys, "w1", cached=(checkpoints["alpha"],))
    assert running is not None and running.job_id == first
    clock.advance(1)
    # bob was served a second ago; alice's job has waited 2 s, far less than the 300 s head
    # start. The claim reads bob's one running job: with a share of 1 that is all of it.
    taken = claim(lifecycle, keys, "w2", cached=(checkpoints["alpha"],))
    assert taken is not None and taken.job_id == {"paid": paid, "free": free}[second]
