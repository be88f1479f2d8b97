"""A replica's record of empty looks: an idle worker's claim stops early only while a worker like
it found nothing a moment ago and nothing it could run was announced since."""

from __future__ import annotations

import asyncio

import pytest

from imagefleet.orchestrator import empty_looks
from imagefleet.orchestrator.empty_looks import ClaimLook, EmptyLooks, WaiterProfile
from imagefleet.orchestrator.work_signal import WorkSignal
from imagefleet.store.database import WorkHint

SMALL = WaiterProfile(frozenset({"txt2img"}), max_pixels=64 * 64, vram_mb=4_000)
BIG = WaiterProfile(frozenset({"txt2img"}), max_pixels=1024 * 1024, vram_mb=24_000)
BIG_JOB = WorkHint("txt2img", 512 * 512, None)
SMALL_JOB = WorkHint("txt2img", 64 * 64, None)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def looks(clock: Clock) -> EmptyLooks:
    return EmptyLooks(fresh_seconds=1.0, clock=clock)


def _empty_look(looks: EmptyLooks, profile: WaiterProfile) -> None:
    looks.found_nothing(profile, looks.start(profile))


def test_an_empty_look_stands_for_a_second_then_the_next_look_runs(
    looks: EmptyLooks, clock: Clock
) -> None:
    assert not looks.nothing_new(SMALL)  # nobody looked yet
    _empty_look(looks, SMALL)
    clock.now += 0.9
    assert looks.nothing_new(SMALL)
    assert not looks.nothing_new(BIG)  # another profile: its own look
    clock.now += 0.1
    assert not looks.nothing_new(SMALL)


def test_work_the_profile_can_run_ends_its_empty_look_and_only_its(
    looks: EmptyLooks, clock: Clock
) -> None:
    _empty_look(looks, SMALL)
    _empty_look(looks, BIG)
    clock.now += 0.1
    looks.announce(BIG_JOB)  # too big for SMALL
    assert looks.nothing_new(SMALL)
    assert not looks.nothing_new(BIG)
    clock.now += 0.1
    looks.announce(SMALL_JOB)
    assert not looks.nothing_new(SMALL)


def test_work_announced_while_a_look_ran_ends_what_that_look_found(
    looks: EmptyLooks, clock: Clock
) -> None:
    """The look began before the job was committed, so it may have missed it: the job's
    announcement comes after the look's start, and wins even though the look ends later."""
    started = looks.start(SMALL)
    clock.now += 0.01
    looks.announce(SMALL_JOB)
    clock.now += 0.01
    looks.found_nothing(SMALL, started)
    assert not looks.nothing_new(SMALL)
    _empty_look(looks, SMALL)  # a look after the announcement saw the job (and found nothing)
    assert looks.nothing_new(SMALL)


def test_unknown_work_ends_every_empty_look(looks: EmptyLooks, clock: Clock) -> None:
    _empty_look(looks, SMALL)
    _empty_look(looks, BIG)
    clock.now += 0.1
    looks.announce(None)
    assert not looks.nothing_new(SMALL)
    assert not looks.nothing_new(BIG)


def test_past_the_bound_on_profiles_all_are_forgotten(
    looks: EmptyLooks, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(empty_looks, "MAX_PROFILES", 3)
    _empty_look(looks, SMALL)
    for pixels in (1, 2, 3):
        looks.start(WaiterProfile(frozenset({"txt2img"}), pixels, 0))
    assert not looks.nothing_new(SMALL)
    started = looks.start(SMALL)
    # A look whose profile was forgotten while it ran records nothing.
    for pixels in (4, 5, 6):
        looks.start(WaiterProfile(frozenset({"txt2img"}), pixels, 0))
    looks.found_nothing(SMALL, started)
    assert not looks.nothing_new(SMALL)


def test_the_signal_records_announcements_but_not_its_poll_ticks() -> None:
    async def run() -> tuple[bool, bool]:
        signal = WorkSignal(10.0, poll_seconds=0.01)
        _empty_look(signal.empty_looks, SMALL)
        ticker = asyncio.create_task(signal.tick_forever())
        await asyncio.sleep(0.05)  # a few ticks: a look, not news
        after_ticks = signal.empty_looks.nothing_new(SMALL)
        signal.notify(SMALL_JOB)
        ticker.cancel()
        return after_ticks, signal.empty_looks.nothing_new(SMALL)

    assert asyncio.run(run()) == (True, False)


def test_a_job_a_claim_here_took_is_no_news(looks: EmptyLooks, clock: Clock) -> None:
    """A job announced after the empty look ends it until a claim here takes it; one taken
    before its announcement arrived (PostgreSQL's NOTIFY comes after the commit) never does."""
    _empty_look(looks, SMALL)
    clock.now += 0.1
    assert looks.announce(WorkHint("txt2img", 64 * 64, None, "j1"))
    assert not looks.nothing_new(SMALL)
    looks.taken(["j1"])
    assert looks.nothing_new(SMALL)
    looks.taken(["j2"])
    assert not looks.announce(WorkHint("txt2img", 64 * 64, None, "j2"))
    assert looks.nothing_new(SMALL) and looks.was_taken("j2")


def test_an_announced_job_nobody_here_took_still_ends_the_look(
    looks: EmptyLooks, clock: Clock
) -> None:
    _empty_look(looks, SMALL)
    clock.now += 0.1
    looks.announce(WorkHint("txt2img", 64 * 64, None, "j1"))
    looks.taken(["other"])
    assert not looks.nothing_new(SMALL)
    clock.now += 0.1
    _empty_look(looks, SMALL)  # a later look found nothing: the job went elsewhere
    assert looks.nothing_new(SMALL)


def test_takes_are_forgotten_after_a_while(looks: EmptyLooks, clock: Clock) -> None:
    looks.taken(["j1"])
    clock.now += empty_looks.TAKEN_SECONDS
    looks.taken(["j2"])  # forgetting happens as new takes come in
    assert not looks.was_taken("j1") and looks.was_taken("j2")


def test_a_claim_woken_for_a_job_taken_here_stops_before_reading(
    looks: EmptyLooks, clock: Clock
) -> None:
    looks.taken(["j1"])
    woken = ClaimLook(SMALL, looks, woken=True)
    assert woken.stale_wake("j1")
    assert not woken.stale_wake("j2") and not woken.stale_wake(None)
    assert not ClaimLook(SMALL, None, woken=True).stale_wake("j1")
    fresh = ClaimLook(SMALL, looks, woken=False)
    assert not fresh.stale_wake(None)  # nobody looked yet
    _empty_look(looks, SMALL)
    assert ClaimLook(SMALL, looks, woken=False).stale_wake(None)


def test_a_job_a_woken_claim_is_taking_is_news_again_once_it_is_done_without_it(
    looks: EmptyLooks, clock: Clock
) -> None:
    _empty_look(looks, SMALL)
    clock.now += 0.1
    looks.announce(WorkHint("txt2img", 64 * 64, None, "j1"))
    looks.woke_for("j1", True)
    assert looks.nothing_new(SMALL)  # a busy worker's claim would only race the woken one
    looks.woke_for("j1", False)  # e.g. left for a worker that holds its models
    assert not looks.nothing_new(SMALL)


def test_the_signal_marks_a_job_fetched_only_when_it_woke_a_claim_for_it() -> None:
    signal = WorkSignal()
    looks = signal.empty_looks
    _empty_look(looks, SMALL)
    signal.notify(WorkHint("txt2img", 64 * 64, None, "nobody-waits"))
    assert not looks.nothing_new(SMALL)  # no claim was woken: others must look
    looks.taken(["nobody-waits"])
    waiter = signal.waiter(SMALL)
    signal.notify(WorkHint("txt2img", 64 * 64, None, "j2"))
    assert waiter.woken and looks.nothing_new(SMALL)
