"""Baselines share the policy interface: FIFO, declared models (AI Horde), look-ahead 32."""

from __future__ import annotations

from imagefleet.scheduling.baselines import DeclaredModelsPolicy, FifoPolicy, LookaheadPolicy
from imagefleet.scheduling.inputs import Candidate, FleetView, WorkerView
from imagefleet.scheduling.policies import POLICY_NAMES, make_policy

NOW = 1000.0
FLEET = FleetView(now=NOW)


def job(job_id: str, model: str, *, waited: float, priority: int = 0) -> Candidate:
    return Candidate(
        job_id=job_id,
        owner="o",
        tier="paid" if priority else "free",
        priority=priority,
        kind="txt2img",
        pixels=512 * 512,
        queued_since=NOW - waited,
        combo_key=model,
        models=((model, 2 * 10**9, "checkpoint"),),
        cost_units=1.0,
    )


WORKER = WorkerView(
    worker_id="w",
    node_id="n",
    kinds=frozenset({"txt2img"}),
    max_pixels=1024 * 1024,
    vram_mb=24_000,
    gpu_type="RTX 3090",
    resident_combos=frozenset({"hot"}),
    resident_models=frozenset({"hot"}),
    cached_models=frozenset({"hot", "disk"}),
)


def top(policy: object, candidates: list[Candidate]) -> str | None:
    decision = policy.best(WORKER, candidates, FLEET)  # type: ignore[attr-defined]
    ranked = policy.rank(WORKER, candidates, FLEET)  # type: ignore[attr-defined]
    assert (decision.candidate.job_id if decision else None) == (
        ranked[0].candidate.job_id if ranked else None
    )
    return decision.candidate.job_id if decision else None


def test_fifo_takes_the_oldest_of_the_highest_priority_whatever_is_loaded() -> None:
    candidates = [job("hot", "hot", waited=1), job("old", "cold", waited=50)]
    assert top(FifoPolicy(), candidates) == "old"
    assert top(FifoPolicy(), [*candidates, job("paid", "cold", waited=0, priority=10)]) == "paid"


def test_declared_models_prefers_a_model_on_disk_but_knows_nothing_of_the_gpu() -> None:
    candidates = [
        job("cold", "cold", waited=50),
        job("disk", "disk", waited=20),
        job("hot", "hot", waited=10),
    ]
    assert (
        top(DeclaredModelsPolicy(), candidates) == "disk"
    )  # oldest declared, not the resident one
    assert top(DeclaredModelsPolicy(), [job("cold", "cold", waited=50)]) == "cold"


def test_lookahead_finds_a_resident_job_within_32_but_not_beyond() -> None:
    filler = [job(f"f{i}", "cold", waited=100 - i) for i in range(32)]
    assert top(LookaheadPolicy(), [*filler[:31], job("hot", "hot", waited=1)]) == "hot"
    assert top(LookaheadPolicy(), [*filler, job("hot", "hot", waited=1)]) == "f0"


def test_every_policy_by_name_respects_hard_limits() -> None:
    huge = Candidate(
        job_id="huge",
        owner="o",
        tier="free",
        priority=0,
        kind="txt2img",
        pixels=4096 * 4096,
        queued_since=0.0,
        combo_key="hot",
        models=(("hot", 1, "checkpoint"),),
        cost_units=1.0,
    )
    for name in POLICY_NAMES:
        policy = make_policy(name)
        assert policy.name == name
        assert policy.best(WORKER, [huge], FLEET) is None
        assert policy.rank(WORKER, [huge], FLEET) == []
        assert policy.choose_waiter(huge, [WORKER], FLEET) is None


def test_waiters_are_chosen_by_what_each_baseline_knows() -> None:
    cold = WorkerView(
        "c",
        "c",
        frozenset({"txt2img"}),
        1 << 22,
        24_000,
        "x",
        frozenset(),
        frozenset(),
        frozenset(),
    )
    wanted = job("hot", "hot", waited=0)
    assert FifoPolicy().choose_waiter(wanted, [cold, WORKER], FLEET) == 0
    assert LookaheadPolicy().choose_waiter(wanted, [cold, WORKER], FLEET) == 1
    assert DeclaredModelsPolicy().choose_waiter(wanted, [cold, WORKER], FLEET) == 1
