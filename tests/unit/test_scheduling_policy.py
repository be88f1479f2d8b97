"""The model-aware policy ranks candidates for one worker: pure, in seconds, explainable."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from imagefleet.scheduling.config import PolicyConfig
from imagefleet.scheduling.costs import Affinity, setup_seconds
from imagefleet.scheduling.inputs import (
    Candidate,
    FleetView,
    ModelNeed,
    WarmHolders,
    WorkerView,
)
from imagefleet.scheduling.limits import Refusal, can_run, refusal
from imagefleet.scheduling.ranking import (
    ModelAwarePolicy,
    best,
    choose_waiter,
    explain_wait,
    rank,
)

GB = 10**9
MB = 10**6
NOW = 10_000.0
CONFIG = PolicyConfig()
BASE: ModelNeed = ("sdxl-base", 7 * GB, "checkpoint")
ANIME: ModelNeed = ("anime", 7 * GB, "checkpoint")
STYLE: ModelNeed = ("style-lora", 100 * MB, "lora")
COMBO = "sdxl-base+style-lora"


def job(
    job_id: str,
    *,
    models: tuple[ModelNeed, ...] = (ANIME,),
    combo: str | None = None,
    owner: str = "alice",
    tier: str = "free",
    priority: int = 0,
    waited: float = 0.0,
    pixels: int = 1024 * 1024,
    kind: str = "txt2img",
    failed: frozenset[str] = frozenset(),
    min_vram_mb: int = 0,
    allow_same_node: bool = False,
) -> Candidate:
    return Candidate(
        job_id=job_id,
        owner=owner,
        tier=tier,
        priority=priority,
        kind=kind,
        pixels=pixels,
        queued_since=NOW - waited,
        combo_key=combo or "+".join(m[0] for m in models),
        models=models,
        cost_units=1.0,
        failed_nodes=failed,
        min_vram_mb=min_vram_mb,
        allow_same_node=allow_same_node,
    )


def worker(
    *,
    combos: frozenset[str] = frozenset({COMBO}),
    resident: frozenset[str] = frozenset({"sdxl-base", "style-lora"}),
    cached: frozenset[str] = frozenset({"sdxl-base", "style-lora", "sd15"}),
    node: str = "node-a",
    live: frozenset[str] = frozenset(),
) -> WorkerView:
    return WorkerView(
        worker_id="w1",
        node_id=node,
        kinds=frozenset({"txt2img"}),
        max_pixels=1024 * 1024,
        vram_mb=24_000,
        gpu_type="RTX 4090",
        resident_combos=combos,
        resident_models=resident,
        cached_models=cached,
        bandwidth_bytes_per_s=100 * MB,
        seconds_per_unit=5.0,
        live_nodes=live,
    )


FLEET = FleetView(now=NOW)


def ids(decisions: list) -> list[str]:
    return [d.candidate.job_id for d in decisions]


# --- affinity, priced in seconds ------------------------------------------------------------


def test_setup_is_priced_in_seconds_from_sizes_bandwidth_and_load_speed() -> None:
    w = worker()
    assert setup_seconds(w, job("hot", models=(BASE, STYLE), combo=COMBO), CONFIG) == (
        0.0,
        Affinity.combo,
    )
    assert setup_seconds(w, job("switch", models=(BASE, STYLE), combo="other"), CONFIG) == (
        CONFIG.combo_switch_s,
        Affinity.models,
    )
    lora_on_disk = ("disk-lora", 150 * MB, "lora")
    seconds, affinity = setup_seconds(w, job("lora", models=(BASE, lora_on_disk)), CONFIG)
    assert affinity is Affinity.download  # not cached either: a download
    assert seconds == pytest.approx(
        150 * MB / (100 * MB) + CONFIG.adapter_load_s + 150 * MB / CONFIG.disk_to_gpu_bytes_per_s
    )
    sd15: ModelNeed = ("sd15", 2 * GB, "checkpoint")
    seconds, affinity = setup_seconds(w, job("disk", models=(sd15,)), CONFIG)
    assert affinity is Affinity.disk
    assert seconds == pytest.approx(
        CONFIG.checkpoint_load_s + 2 * GB / CONFIG.disk_to_gpu_bytes_per_s
    )
    seconds, affinity = setup_seconds(w, job("cold", models=(ANIME,)), CONFIG)
    assert affinity is Affinity.download
    assert seconds == pytest.approx(
        70 + CONFIG.checkpoint_load_s + 7 * GB / CONFIG.disk_to_gpu_bytes_per_s
    )


def test_resident_combo_beats_resident_checkpoint_beats_disk_beats_download() -> None:
    other_lora: ModelNeed = ("other-lora", 100 * MB, "lora")
    sd15: ModelNeed = ("sd15", 2 * GB, "checkpoint")
    candidates = [
        job("download", models=(ANIME,), waited=5),
        job("disk", models=(sd15,), waited=5),
        job("base", models=(BASE, other_lora), waited=5),
        job("combo", models=(BASE, STYLE), combo=COMBO, waited=5),
    ]
    assert ids(rank(worker(), candidates, FLEET)) == ["combo", "base", "disk", "download"]


def test_a_slow_link_worker_leaves_a_cold_download_and_runs_work_from_its_disk() -> None:
    sd15: ModelNeed = ("sd15", 2 * GB, "checkpoint")
    candidates = [
        job("paid-download", models=(ANIME,), tier="paid", priority=10),
        job("free-disk", models=(sd15,), waited=100),
    ]
    consumer = replace(worker(), bandwidth_bytes_per_s=125 * MB)
    datacenter = replace(worker(), bandwidth_bytes_per_s=1000 * MB)
    # 56 s of download at 125 MB/s, priced 6x, outweighs the paid tier's 300 s head start.
    assert ids(rank(consumer, candidates, FLEET))[0] == "free-disk"
    assert ids(rank(datacenter, candidates, FLEET))[0] == "paid-download"
    # Priced 1x (the earlier default), the slow link downloaded it ahead of the job on its disk.
    assert ids(rank(consumer, candidates, FLEET, PolicyConfig(download_weight=1)))[0] == (
        "paid-download"
    )


# --- tiers and aging -----------------------------------------------------------------------


def test_a_paid_job_counts_as_if_it_had_waited_its_head_start_longer() -> None:
    candidates = [
        job("free-hot", models=(BASE, STYLE), combo=COMBO, waited=60),
        job("paid-hot", models=(BASE, STYLE), combo=COMBO, tier="paid", priority=10),
    ]
    patient = PolicyConfig(aging_bound_s=20_000)
    assert ids(rank(worker(), candidates, FLEET, patient))[0] == "paid-hot"
    older = [job("free-old", models=(BASE, STYLE), combo=COMBO, waited=3001), candidates[1]]
    assert ids(rank(worker(), older, FLEET, patient))[0] == "free-old"


def test_past_the_aging_bound_a_cold_free_job_outranks_a_resident_paid_one() -> None:
    config = PolicyConfig(aging_bound_s=600, aging_lead_s=60)
    candidates = [
        job("paid-hot", models=(BASE, STYLE), combo=COMBO, tier="paid", priority=10, waited=500),
        job("free-cold", models=(ANIME,), waited=541),
    ]
    decisions = rank(worker(), candidates, FLEET, config)
    assert ids(decisions) == ["free-cold", "paid-hot"]
    assert decisions[0].reason == "waited 541 s, near the 600 s bound"


def test_just_before_the_urgent_point_affinity_still_wins() -> None:
    config = PolicyConfig(aging_bound_s=600, aging_lead_s=60)
    candidates = [
        job("paid-hot", models=(BASE, STYLE), combo=COMBO, tier="paid", priority=10, waited=500),
        job("free-cold", models=(ANIME,), waited=539),
    ]
    assert ids(rank(worker(), candidates, FLEET, config))[0] == "paid-hot"


# --- fairness between owners -----------------------------------------------------------------


def test_a_single_job_goes_ahead_of_another_owners_batch_being_served() -> None:
    batch = [job(f"batch-{i}", owner="bulk", waited=600 - i) for i in range(3)]
    single = job("single", owner="bob", waited=2)
    # bulk's batch is being served (its last job was handed out a second ago); bob never was.
    fleet = FleetView(NOW, served_at={"bulk": NOW - 1})
    decisions = rank(worker(), [*batch, single], fleet)
    assert ids(decisions) == ["single", "batch-0", "batch-1", "batch-2"]
    assert decisions[0].reason.startswith("fair share: owner under its share")
    assert decisions[1].reason.startswith("owner served 1 s ago")


def test_owners_take_turns_rather_than_the_oldest_owner_going_first() -> None:
    alice = job("alice", owner="alice", waited=30)
    bob = job("bob", owner="bob", waited=10)
    served_alice = FleetView(NOW, served_at={"alice": NOW - 5, "bob": NOW - 60})
    assert ids(rank(worker(), [alice, bob], served_alice)) == ["bob", "alice"]
    assert ids(rank(worker(), [alice, bob], FLEET)) == ["alice", "bob"]


def test_with_nobody_else_waiting_the_batch_runs() -> None:
    fleet = FleetView(NOW, served_at={"bulk": NOW - 1})
    batch = [job(f"batch-{i}", owner="bulk", waited=600 - i) for i in range(3)]
    assert ids(rank(worker(), batch, fleet)) == ["batch-0", "batch-1", "batch-2"]


def test_fair_share_is_within_a_tier_only() -> None:
    fleet = FleetView(NOW, served_at={"paid-heavy": NOW})
    paid = job("paid", owner="paid-heavy", tier="paid", priority=10, waited=5)
    free = job("free", owner="newcomer", waited=5)
    assert ids(rank(worker(), [paid, free], fleet))[0] == "paid"


# --- a tier's head start covers an owner's share ---------------------------------------------

SHARE = PolicyConfig(head_start_jobs=4)


def test_a_paid_owner_with_its_share_running_loses_the_head_start_to_a_younger_free_job() -> None:
    # The studio's batch is being served (last claim 10 s ago, so its job has waited 10 s for
    # its rank); bob's free job has waited 100 s, less than the 300 s head start. Today the
    # batch's job goes first (310 s against 100 s); with the studio's 4 jobs running, no.
    paid = job("batch", owner="studio", tier="paid", priority=10, waited=200, models=(BASE,))
    free = job("single", owner="bob", waited=100, models=(BASE,))
    busy = FleetView(NOW, served_at={"studio": NOW - 10}, running={"studio": 4})
    assert ids(rank(worker(), [paid, free], busy)) == ["batch", "single"]
    decisions = rank(worker(), [paid, free], busy, SHARE)
    assert ids(decisions) == ["single", "batch"]
    assert decisions[0].score - decisions[1].score == pytest.approx(90.0)


def test_within_its_share_a_paid_owner_keeps_the_head_start() -> None:
    paid = job("batch", owner="studio", tier="paid", priority=10, waited=200, models=(BASE,))
    free = job("single", owner="bob", waited=100, models=(BASE,))
    under = FleetView(NOW, served_at={"studio": NOW - 10}, running={"studio": 3})
    assert ids(rank(worker(), [paid, free], under, SHARE)) == ["batch", "single"]


def test_beyond_its_share_a_job_still_ages_past_everything() -> None:
    old = job("batch", owner="studio", tier="paid", priority=10, waited=3400, models=(ANIME,))
    fresh = job("single", owner="bob", tier="paid", priority=10, waited=250, models=(BASE,))
    busy = FleetView(NOW, running={"studio": 40})
    decisions = rank(worker(), [fresh, old], busy, SHARE)
    assert ids(decisions) == ["batch", "single"]
    assert "near the 3600 s bound" in decisions[0].reason


def test_the_reason_says_the_head_start_was_withheld() -> None:
    paid = job("batch", owner="studio", tier="paid", priority=10, waited=20, models=(BASE,))
    decision = rank(worker(), [paid], FleetView(NOW, running={"studio": 4}), SHARE)[0]
    assert decision.reason.startswith("owner has its share running: no paid head start")


def test_fifo_over_jobs_would_have_served_the_batch_first() -> None:
    from imagefleet.scheduling.baselines import FifoPolicy

    candidates = [job("batch-0", owner="bulk", waited=30), job("single", owner="bob", waited=1)]
    assert ids(FifoPolicy().rank(worker(), candidates, FLEET)) == ["batch-0", "single"]


# --- bounded wait for a warm busy worker --------------------------------------------------------


def test_a_cold_worker_leaves_a_job_to_a_busy_worker_holding_its_combo_that_frees_soon() -> None:
    cold = worker(combos=frozenset(), resident=frozenset(), cached=frozenset())
    wanted = job("warm-elsewhere", models=(ANIME,), waited=10)
    other = job("other", models=(BASE,), waited=1)
    fleet = FleetView(NOW, warm={"anime": WarmHolders(free_in_seconds=4.0, holders=1, queued=1)})
    assert ids(rank(cold, [wanted, other], fleet)) == ["other"]
    assert best(cold, [wanted], fleet) is None
    assert explain_wait(cold, wanted, fleet) == "waiting for a busy worker that holds its models"
    assert choose_waiter(wanted, [cold], fleet) is None


def test_the_wait_for_a_warm_worker_is_bounded() -> None:
    cold = worker(combos=frozenset(), resident=frozenset(), cached=frozenset())
    wanted = job("warm-elsewhere", models=(ANIME,), waited=10)
    busy_long = FleetView(NOW, warm={"anime": WarmHolders(60.0, holders=1, queued=1)})
    assert ids(rank(cold, [wanted], busy_long)) == ["warm-elsewhere"]
    # Many queued jobs for one warm worker: waiting behind all of them is no bargain either.
    crowded = FleetView(NOW, warm={"anime": WarmHolders(2.0, holders=1, queued=40)})
    assert ids(rank(cold, [wanted], crowded)) == ["warm-elsewhere"]
    # Nor does a job near its aging bound wait for anybody.
    config = PolicyConfig(aging_bound_s=600, aging_lead_s=60)
    soon = FleetView(NOW, warm={"anime": WarmHolders(4.0, holders=1, queued=1)})
    old = job("old", models=(ANIME,), waited=545)
    assert ids(rank(cold, [old], soon, config)) == ["old"]


def test_a_worker_holding_the_checkpoint_counts_as_warm_for_its_lora_combos() -> None:
    cold = worker(combos=frozenset(), resident=frozenset(), cached=frozenset())
    wanted = job("lora-combo", models=(ANIME, STYLE), waited=10)
    fleet = FleetView(NOW, warm={"anime": WarmHolders(3.0, holders=2, queued=1)})
    assert best(cold, [wanted], fleet) is None


# --- hard limits ----------------------------------------------------------------------------


def test_hard_limits_kind_pixels_vram_and_failed_node() -> None:
    w = worker()
    assert refusal(w, job("train", kind="train_lora")) is Refusal.kind
    assert refusal(w, job("huge", pixels=2048 * 2048)) is Refusal.pixels
    assert refusal(w, job("big", min_vram_mb=40_000)) is Refusal.vram
    assert refusal(w, job("failed", failed=frozenset({"node-a"}))) is Refusal.failed_here
    assert refusal(w, job("ok", failed=frozenset({"node-b"}))) is None
    assert rank(w, [job("huge", pixels=2048 * 2048), job("train", kind="train_lora")], FLEET) == []


def test_a_same_node_retry_only_when_it_failed_on_every_live_node() -> None:
    retry = job("retry", failed=frozenset({"node-a", "node-b"}), allow_same_node=True)
    assert can_run(worker(live=frozenset({"node-a", "node-b"})), retry)
    assert not can_run(worker(live=frozenset({"node-a", "node-b", "node-c"})), retry)
    no_retry = job("strict", failed=frozenset({"node-a"}))
    assert not can_run(worker(live=frozenset({"node-a"})), no_retry)


# --- reasons --------------------------------------------------------------------------------


def test_reasons_name_what_decided() -> None:
    paid = job("paid", models=(BASE, STYLE), combo=COMBO, tier="paid", priority=10, waited=3)
    free = job("free", models=(ANIME,), waited=1)
    decisions = rank(worker(), [paid, free], FLEET)
    assert decisions[0].reason == "oldest paid job; combo resident"
    assert decisions[1].reason.startswith("waited 1 s; needs a download (")
    paid_two = job("paid-2", models=(ANIME,), tier="paid", priority=10, waited=1)
    decisions = rank(worker(), [paid, paid_two, free], FLEET)
    assert [d.reason.split(";")[0] for d in decisions] == [
        "oldest paid job",
        "paid tier first",
        "waited 1 s",
    ]


# --- best, rank and the policy object agree --------------------------------------------------


def test_best_is_the_head_of_rank_on_random_claims() -> None:
    rng = random.Random(7)
    pool = [BASE, ANIME, ("sd15", 2 * GB, "checkpoint")]
    loras = [STYLE, ("l2", 50 * MB, "lora"), ("l3", 300 * MB, "lora")]
    for _ in range(200):
        candidates = [
            job(
                f"j{i}",
                models=(rng.choice(pool), *rng.sample(loras, rng.randint(0, 2))),
                tier=rng.choice(["free", "paid"]),
                priority=rng.choice([0, 10]),
                waited=rng.uniform(0, 2000),
                owner=rng.choice("abc"),
            )
            for i in range(rng.randint(1, 12))
        ]
        fleet = FleetView(
            NOW,
            served_at={"a": NOW - rng.uniform(0, 500), "b": NOW - rng.uniform(0, 50)},
            warm={"anime": WarmHolders(rng.uniform(0, 20), 1, rng.randint(1, 3))},
        )
        ranked = rank(worker(), candidates, fleet)
        top = best(worker(), candidates, fleet)
        assert (top.candidate.job_id if top else None) == (
            ranked[0].candidate.job_id if ranked else None
        )
        assert [d.score for d in ranked] == sorted((d.score for d in ranked), reverse=True)
        policy = ModelAwarePolicy()
        assert ids(policy.rank(worker(), candidates, fleet)) == ids(ranked)


def test_the_waiter_with_the_least_setup_is_woken() -> None:
    cold = worker(combos=frozenset(), resident=frozenset(), cached=frozenset(), node="cold")
    disk = worker(
        combos=frozenset(), resident=frozenset(), cached=frozenset({"anime"}), node="disk"
    )
    hot = worker(combos=frozenset(), resident=frozenset({"anime"}), node="hot")
    wanted = job("anime", models=(ANIME,))
    assert choose_waiter(wanted, [cold, disk, hot], FLEET) == 2
    assert choose_waiter(wanted, [cold, disk], FLEET) == 1
    assert choose_waiter(job("x", kind="train_lora"), [cold, disk], FLEET) is None


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"policy\.setup_weight: must be >= 0"):
        PolicyConfig(setup_weight=-1)
    with pytest.raises(ValueError, match=r"policy\.aging_lead_s: must be below aging_bound_s"):
        PolicyConfig(aging_bound_s=60, aging_lead_s=60)
