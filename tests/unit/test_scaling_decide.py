"""decide_scale and choose_victims are pure: the same inputs give the same answer, no I/O."""

from __future__ import annotations

from typing import Any

from imagefleet.scaling.decide import (
    Demand,
    PoolState,
    ScaleInCandidate,
    ScalePlan,
    TierDemand,
    Victim,
    choose_victims,
    decide_scale,
    plan_scale,
)
from imagefleet.scaling.pools import LocalSettings, Pool

T0 = 1_800_000_000.0


def make_pool(**overrides: Any) -> Pool:
    fields: dict[str, Any] = {
        "name": "gpu-a",
        "gpu": "RTX 4090",
        "vram_mb": 24564,
        "price_per_hour": 0.3,
        "min": 0,
        "max": 10,
        "scale_down_cooldown_seconds": 120,
        "idle_to_zero_seconds": 300,
        "provider": LocalSettings(type="local"),
        **overrides,
    }
    return Pool(**fields)


def demand(
    queued: int = 0, running: int = 0, last_busy_at: float | None = None, **tier: Any
) -> Demand:
    return Demand({"free": TierDemand(queued=queued, running=running, **tier)}, last_busy_at)


def test_default_rule_is_running_plus_queued_clamped_with_the_reason() -> None:
    decision = decide_scale(make_pool(max=4), demand(queued=3, running=2), T0, PoolState(0))
    assert decision.desired == 4
    assert decision.wanted == 5
    assert decision.action == "up"
    assert decision.reason == "3 queued + 2 running -> 5, clamped to max 4"


def test_min_is_kept_even_without_work() -> None:
    decision = decide_scale(make_pool(min=2), demand(), T0, PoolState(2))
    assert decision.desired == 2
    assert decision.reason == "0 queued + 0 running -> 0, raised to min 2"


def test_scale_up_goes_in_steps() -> None:
    pool = make_pool(scale_up_step=4)
    first = decide_scale(pool, demand(queued=9), T0, PoolState(0))
    assert first.desired == 4
    assert first.reason.endswith("; up from 0 by step 4 to 4")
    second = decide_scale(pool, demand(queued=9), T0 + 5, first.state)
    assert second.desired == 8
    third = decide_scale(pool, demand(queued=9), T0 + 10, second.state)
    assert third.desired == 9


def test_without_a_step_scale_up_is_immediate() -> None:
    assert decide_scale(make_pool(), demand(queued=9), T0, PoolState(1)).desired == 9


def test_scale_down_waits_out_the_cooldown() -> None:
    pool = make_pool()
    up = decide_scale(pool, demand(queued=6), T0, PoolState(0))
    assert up.desired == 6
    held = decide_scale(pool, demand(running=2), T0 + 60, up.state)
    assert held.desired == 6
    assert held.action == "hold"
    assert "holding 6 until the 120s cooldown passes (wanted 6 within it)" in held.reason
    down = decide_scale(pool, demand(running=2), T0 + 121, held.state)
    assert down.desired == 2
    assert down.action == "down"


def test_scale_down_stops_at_the_highest_count_wanted_within_the_window() -> None:
    pool = make_pool()
    state = decide_scale(pool, demand(queued=8), T0, PoolState(0)).state
    state = decide_scale(pool, demand(running=5), T0 + 100, state).state
    decision = decide_scale(pool, demand(running=1), T0 + 150, state)
    assert decision.desired == 5
    assert "down from 8 to 5, the most wanted in the last 120s" in decision.reason


def test_a_pool_with_recent_work_keeps_one_worker_warm_until_the_idle_time_passes() -> None:
    pool = make_pool(scale_down_cooldown_seconds=0)
    decision = decide_scale(pool, demand(last_busy_at=T0 - 40), T0, PoolState(3))
    assert decision.desired == 1
    assert decision.reason.startswith(
        "0 queued + 0 running, last busy 40s ago (idle-to-zero 300s) -> 1"
    )
    assert decide_scale(pool, demand(last_busy_at=T0 - 301), T0, decision.state).desired == 0


def test_a_pool_that_never_worked_stays_at_zero() -> None:
    assert decide_scale(make_pool(), demand(), T0, PoolState(0)).desired == 0


def test_recent_work_adds_nothing_when_there_is_work_now() -> None:
    decision = decide_scale(
        make_pool(), demand(queued=1, running=2, last_busy_at=T0), T0, PoolState(3)
    )
    assert decision.desired == 3


def test_throughput_rule_sizes_for_the_target_wait() -> None:
    # 0.5 s per unit; 240 units queued + 60 left on running jobs: 150 s of work.
    # For a 30 s wait that needs 5 workers.
    pool = make_pool(rule="throughput", target_wait_seconds=30, seconds_per_unit=0.5)
    work = Demand(
        {"free": TierDemand(queued=12, running=3, queued_units=240, running_remaining_units=60)}
    )
    decision = decide_scale(pool, work, T0, PoolState(0))
    assert decision.rule == "throughput"
    assert decision.desired == 5
    assert "free 30s target needs 5.0" in decision.reason


def test_throughput_rule_adds_the_workers_that_arrivals_keep_busy() -> None:
    # 4 units/s arriving at 0.5 s/unit keeps 2 workers busy, on top of 2 for the backlog.
    pool = make_pool(rule="throughput", target_wait_seconds=30, seconds_per_unit=0.5)
    tier = TierDemand(queued=6, queued_units=120, arrival_units_per_second=4)
    assert decide_scale(pool, Demand({"free": tier}), T0, PoolState(0)).desired == 4


def test_throughput_rule_serves_each_tier_its_own_target_counting_higher_tiers_ahead() -> None:
    # paid: 60 units for 10 s at 1 s/unit -> 6; free: 60 + 300 units for 120 s -> 3. Paid wins.
    pool = make_pool(
        rule="throughput",
        seconds_per_unit=1.0,
        target_wait_seconds=120,
        target_wait_seconds_by_tier={"paid": 10},
    )
    work = Demand(
        {
            "paid": TierDemand(queued=6, queued_units=60, priority=10),
            "free": TierDemand(queued=30, queued_units=300, priority=0),
        }
    )
    decision = decide_scale(pool, work, T0, PoolState(0))
    assert decision.desired == 6
    assert "paid 10s target needs 6.0" in decision.reason


def test_throughput_rule_never_wants_more_workers_than_jobs_and_arrivals() -> None:
    pool = make_pool(rule="throughput", target_wait_seconds=1, seconds_per_unit=1.0)
    work = Demand({"free": TierDemand(queued=2, queued_units=1000)})
    decision = decide_scale(pool, work, T0, PoolState(0))
    assert decision.desired == 2
    assert "capped at 2" in decision.reason


def test_measured_seconds_per_unit_wins_over_the_configured_prior() -> None:
    pool = make_pool(rule="throughput", target_wait_seconds=10, seconds_per_unit=10.0)
    work = Demand({"free": TierDemand(queued=20, queued_units=100)}, seconds_per_unit=0.5)
    assert decide_scale(pool, work, T0, PoolState(0)).desired == 5


def test_throughput_rule_without_any_measurement_falls_back_to_the_queue_rule() -> None:
    pool = make_pool(rule="throughput")
    decision = decide_scale(pool, demand(queued=3, running=1), T0, PoolState(0))
    assert decision.desired == 4
    assert decision.rule == "queue"
    assert decision.reason.startswith("no s/unit measured for RTX 4090 yet: 3 queued + 1 running")


def test_the_same_inputs_give_the_same_decision() -> None:
    pool, work, state = make_pool(scale_up_step=2), demand(queued=5), PoolState(1)
    assert decide_scale(pool, work, T0, state) == decide_scale(pool, work, T0, state)


def test_victims_idle_first_then_busy_ones_soonest_done() -> None:
    instances = [
        ScaleInCandidate("busy-long", busy=True, busy_remaining_seconds=50),
        ScaleInCandidate("idle-recent", idle_since=T0 - 10),
        ScaleInCandidate("busy-short", busy=True, busy_remaining_seconds=5),
        ScaleInCandidate("idle-long", idle_since=T0 - 500),
    ]
    assert choose_victims(instances, 3) == [
        Victim("idle-long", busy=False),
        Victim("idle-recent", busy=False),
        Victim("busy-short", busy=True),
    ]


def test_victims_draining_ones_count_first_then_the_newest_still_starting() -> None:
    instances = [
        ScaleInCandidate("idle", idle_since=T0 - 500),
        ScaleInCandidate("booting-old", ready=False, started_at=T0 - 100),
        ScaleInCandidate("booting-new", ready=False, started_at=T0 - 5),
        ScaleInCandidate("leaving", draining=True, busy=True),
    ]
    assert [v.instance_id for v in choose_victims(instances, 4)] == [
        "leaving",
        "booting-new",
        "booting-old",
        "idle",
    ]


def test_a_busy_victim_is_always_marked_busy_so_it_is_drained_not_stopped() -> None:
    instances = [ScaleInCandidate("a", busy=True), ScaleInCandidate("b", busy=True)]
    assert all(v.busy for v in choose_victims(instances, 2))


def test_asking_for_no_victims_or_more_than_exist() -> None:
    instances = [ScaleInCandidate("a"), ScaleInCandidate("b")]
    assert choose_victims(instances, 0) == []
    assert len(choose_victims(instances, 5)) == 2


def test_a_scale_up_plan_is_just_the_new_count() -> None:
    decision = decide_scale(make_pool(), demand(queued=4), T0, PoolState(1))
    assert plan_scale(decision, [ScaleInCandidate("a")]) == ScalePlan(4)


def test_a_scale_in_plan_removes_idle_victims_and_keeps_busy_ones_until_done() -> None:
    pool = make_pool(scale_down_cooldown_seconds=0)
    decision = decide_scale(pool, demand(running=1), T0, PoolState(4))
    assert decision.desired == 1
    instances = [
        ScaleInCandidate("idle-1", idle_since=T0 - 50),
        ScaleInCandidate("busy-1", busy=True, busy_remaining_seconds=3),
        ScaleInCandidate("busy-2", busy=True, busy_remaining_seconds=30),
        ScaleInCandidate("idle-2", idle_since=T0 - 10),
    ]
    plan = plan_scale(decision, instances)
    assert plan == ScalePlan(2, remove=("idle-1", "idle-2"), stop_claiming=("busy-1",))
