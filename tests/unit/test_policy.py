"""The scheduling policy is a pure ranking: same inputs, same answer, no I/O."""

from __future__ import annotations

from imagefleet.scheduling.policy import Candidate, WorkerView, rank_affinity, rank_fifo

WORKER = WorkerView(
    node_id="node-a",
    kinds=frozenset({"txt2img"}),
    max_pixels=512 * 512,
    resident_models=frozenset({"sdxl"}),
    cached_models=frozenset({"sd15"}),
)


def job(
    job_id: str,
    *,
    model: str = "other",
    priority: int = 0,
    waited: float = 0.0,
    pixels: int = 64 * 64,
    failed: frozenset[str] = frozenset(),
    kind: str = "txt2img",
) -> Candidate:
    return Candidate(job_id, kind, priority, pixels, waited, model, failed)


def ids(ranked: list[Candidate]) -> list[str]:
    return [c.job_id for c in ranked]


def test_a_job_whose_model_is_on_the_gpu_beats_one_on_disk_which_beats_neither() -> None:
    ranked = rank_affinity(
        WORKER, [job("cold", waited=5), job("disk", model="sd15"), job("gpu", model="sdxl")]
    )
    assert ids(ranked) == ["gpu", "disk", "cold"]


def test_tier_priority_outweighs_model_affinity() -> None:
    ranked = rank_affinity(WORKER, [job("free-hot", model="sdxl"), job("paid-cold", priority=10)])
    assert ids(ranked)[0] == "paid-cold"


def test_a_long_wait_eventually_beats_affinity_so_nothing_starves() -> None:
    ranked = rank_affinity(WORKER, [job("hot", model="sdxl"), job("old", waited=3600)])
    assert ids(ranked)[0] == "old"


def test_never_offers_a_job_on_a_node_where_it_already_failed() -> None:
    ranked = rank_affinity(WORKER, [job("failed-here", failed=frozenset({"node-a"})), job("ok")])
    assert ids(ranked) == ["ok"]


def test_jobs_too_large_or_of_another_kind_are_not_offered() -> None:
    ranked = rank_affinity(
        WORKER, [job("huge", pixels=1024 * 1024), job("train", kind="train_lora")]
    )
    assert ranked == []


def test_fifo_baseline_ignores_what_the_worker_has_loaded() -> None:
    ranked = rank_fifo(WORKER, [job("hot", model="sdxl", waited=1), job("old", waited=2)])
    assert ids(ranked) == ["old", "hot"]
