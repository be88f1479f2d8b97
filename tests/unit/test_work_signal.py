"""One waiter woken per job: the parked claims of a replica, keyed by what they can run."""

from __future__ import annotations

import asyncio

from imagefleet.orchestrator.work_signal import WaiterProfile, WorkSignal
from imagefleet.store.database import WorkHint

BIG = WaiterProfile(frozenset({"txt2img"}), max_pixels=1024 * 1024, vram_mb=24_000)
SMALL = WaiterProfile(frozenset({"txt2img"}), max_pixels=64 * 64, vram_mb=4_000)
TRAINER = WaiterProfile(frozenset({"train_lora"}), max_pixels=1024 * 1024, vram_mb=24_000)
JOB = WorkHint("txt2img", 512 * 512)


def test_a_new_job_wakes_only_the_oldest_waiter_that_can_run_it() -> None:
    signal = WorkSignal()
    small, first, second = signal.waiter(SMALL), signal.waiter(BIG), signal.waiter(BIG)
    signal.notify(JOB)
    assert [small.woken, first.woken, second.woken] == [False, True, False]
    assert first.hint == JOB


def test_a_replica_whose_waiters_cannot_run_a_job_wakes_nobody() -> None:
    signal = WorkSignal()
    waiters = [signal.waiter(SMALL), signal.waiter(TRAINER)]
    signal.notify(JOB)
    signal.notify(WorkHint("txt2img", 64 * 64, vram_mb=8_000))  # too much VRAM for SMALL
    assert not any(w.woken for w in waiters)


def test_a_worker_that_reports_no_vram_is_not_held_to_vram_requirements() -> None:
    signal = WorkSignal()
    cpu = signal.waiter(WaiterProfile(frozenset({"txt2img"}), max_pixels=1 << 20, vram_mb=0))
    signal.notify(WorkHint("txt2img", 4096, vram_mb=80_000))
    assert cpu.woken


def test_each_job_wakes_a_different_waiter() -> None:
    signal = WorkSignal()
    waiters = [signal.waiter(BIG) for _ in range(3)]
    signal.notify(JOB)
    signal.notify(JOB)
    assert [w.woken for w in waiters] == [True, True, False]


def test_an_undescribed_change_wakes_one_waiter_of_each_profile() -> None:
    signal = WorkSignal()
    big1, big2, small, trainer = (signal.waiter(p) for p in (BIG, BIG, SMALL, TRAINER))
    signal.notify(None)
    assert [big1.woken, big2.woken, small.woken, trainer.woken] == [True, False, True, True]


def test_a_woken_claimer_that_leaves_with_a_job_passes_its_wake_up_on() -> None:
    """It may have taken another job than the one it was woken for: the next suitable waiter
    looks, so the new job is not left queued until the re-check timer."""
    signal = WorkSignal()
    first, small, second = signal.waiter(BIG), signal.waiter(SMALL), signal.waiter(BIG)
    signal.notify(JOB)
    signal.release(first, pass_on=True)
    assert second.woken and second.hint == JOB and not small.woken
    assert signal.waiting() == 2


def test_a_claimer_that_looks_again_keeps_its_wake_up() -> None:
    signal = WorkSignal()
    first, second = signal.waiter(BIG), signal.waiter(BIG)
    signal.notify(JOB)
    signal.release(first, pass_on=False)  # it goes round its loop and claims again
    assert not second.woken


def test_an_unwoken_waiter_leaving_wakes_nobody() -> None:
    signal = WorkSignal()
    first, second = signal.waiter(BIG), signal.waiter(BIG)
    signal.release(first, pass_on=True)
    assert not second.woken and signal.waiting() == 1


def test_announce_leaves_the_wake_up_to_the_database_when_it_notifies_every_replica() -> None:
    polling, listening = WorkSignal(), WorkSignal(listening=True)
    a, b = polling.waiter(BIG), listening.waiter(BIG)
    polling.announce(JOB)
    listening.announce(JOB)
    assert a.woken and not b.woken


def test_a_local_announcement_ends_the_empty_looks_before_the_database_notification() -> None:
    """A claim sent right after the submit's answer looks, even while the NOTIFY is on its way."""
    signal = WorkSignal(listening=True)
    looks = signal.empty_looks
    looks.found_nothing(BIG, looks.start(BIG))
    assert looks.nothing_new(BIG)
    signal.announce(WorkHint("txt2img", 4096, None, "j1"))
    assert not looks.nothing_new(BIG)
    waiter = signal.waiter(BIG)
    signal.notify(WorkHint("txt2img", 4096, None, "j1"))  # the NOTIFY arrives: one wake-up
    assert waiter.woken


def test_work_hints_survive_the_notify_payload() -> None:
    named = WorkHint("txt2img", 4096, None, "0123abcd")
    for hint in (JOB, WorkHint("train_lora", 1024 * 1024, 16_000), named):
        assert WorkHint.decode(hint.encode()) == hint
    assert WorkHint.decode("") is None and WorkHint.decode("txt2img lots 0") is None
    assert WorkHint.decode("txt2img 4096 0") == WorkHint("txt2img", 4096)  # an older replica's


def test_a_job_a_claim_here_already_took_wakes_nobody() -> None:
    """Its claim committed before the announcement arrived: a woken claim would find nothing.
    A wake-up passed on for it goes nowhere either."""
    signal = WorkSignal()
    first, second = signal.waiter(BIG), signal.waiter(BIG)
    signal.empty_looks.taken(["j1"])
    signal.notify(WorkHint("txt2img", 4096, None, "j1"))
    assert not first.woken
    signal.notify(WorkHint("txt2img", 4096, None, "j2"))
    assert first.woken and not second.woken
    signal.empty_looks.taken(["j2"])  # the woken claim took it
    signal.release(first, pass_on=True)
    assert not second.woken


def test_without_notifications_a_tick_wakes_the_oldest_waiter_of_each_profile_only() -> None:
    async def run() -> list[bool]:
        signal = WorkSignal(poll_seconds=0.01)
        waiters = [signal.waiter(p) for p in (BIG, BIG, SMALL)]
        ticker = asyncio.create_task(signal.tick_forever())
        await asyncio.wait_for(waiters[0].event.wait(), timeout=5)
        ticker.cancel()  # one tick woke the oldest of each profile at once; no second tick
        return [w.woken for w in waiters]

    assert asyncio.run(run()) == [True, False, True]


def test_a_claim_counts_as_parked_only_while_it_waits() -> None:
    """`parked` is what a completion's next claim yields to (claim_answers.FollowingClaim)."""

    async def scenario() -> list[bool]:
        signal = WorkSignal()
        waiter = signal.waiter(BIG)
        seen = [signal.parked(BIG)]  # in the queue, still looking: not parked
        waiting = asyncio.create_task(signal.wait(waiter, timeout=5.0))
        await asyncio.sleep(0.01)
        seen += [signal.parked(BIG), signal.parked(SMALL)]
        signal.notify(JOB)
        seen.append(await waiting)  # woken
        seen.append(signal.parked(BIG))
        seen.append(await signal.wait(signal.waiter(BIG), timeout=0.01))  # timed out
        seen.append(signal.parked(BIG))
        return seen

    assert asyncio.run(scenario()) == [False, True, False, True, False, False, False]
