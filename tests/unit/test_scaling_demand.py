"""Demand per pool from queued and running work (pure), and scale-in candidates from the
provider's instances joined with their workers' activity."""

from __future__ import annotations

from typing import Any

from imagefleet.scaling.demand import NodeActivity, WorkItem, pool_demands, scale_in_candidates
from imagefleet.scaling.pools import Pool
from imagefleet.scaling.providers.base import Instance, InstanceState

NOW = 10_000.0


def pool(name: str, price: float, maximum: int, **fields: Any) -> Pool:
    return Pool.model_validate(
        {
            "name": name,
            "gpu": fields.pop("gpu", "RTX 4090"),
            "vram_mb": fields.pop("vram_mb", 24_000),
            "price_per_hour": price,
            "max": maximum,
            "provider": {"type": "command", "scale": ["true"], "replace": ["true"]},
            **fields,
        }
    )


def queued(tier: str = "free", **fields: Any) -> WorkItem:
    values: dict[str, Any] = {
        "kind": "txt2img",
        "pixels": 512 * 512,
        "min_vram_mb": None,
        "model": None,
        "tier": tier,
        "priority": 10 if tier == "paid" else 0,
        "cost_units": 2.0,
        "created_at": NOW - 30,
        "running": False,
    }
    return WorkItem(**{**values, **fields})


def test_queued_work_goes_to_the_cheapest_pool_with_room_then_spills_to_the_next() -> None:
    cheap, dear = pool("cheap", 0.3, 2), pool("dear", 1.6, 8, gpu="A100")
    demands = pool_demands([dear, cheap], [queued() for _ in range(5)], NOW, {}, {})
    assert demands["cheap"].queued == 2 and demands["dear"].queued == 3


def test_when_every_pool_is_full_the_rest_counts_for_the_cheapest() -> None:
    demands = pool_demands([pool("a", 0.3, 1), pool("b", 0.5, 1)], [queued()] * 4, NOW, {}, {})
    assert demands["a"].queued == 3 and demands["b"].queued == 1


def test_a_job_counts_only_for_pools_that_serve_its_kind_size_vram_and_model() -> None:
    small = pool("small", 0.1, 10, vram_mb=8_000, max_pixels=512 * 512, models=["sd15"])
    big = pool("big", 1.0, 10, kinds=["txt2img", "train_lora"])
    items = [
        queued(model="sd15"),
        queued(model="sdxl"),
        queued(pixels=1024 * 1024),
        queued(min_vram_mb=16_000),
        queued(kind="train_lora"),
        queued(kind="inpaint"),  # no pool serves it
    ]
    demands = pool_demands([small, big], items, NOW, {}, {})
    assert demands["small"].queued == 1 and demands["big"].queued == 4


def test_running_work_is_its_workers_pool_with_what_is_left_of_it() -> None:
    items = [
        queued(running=True, pool="a", remaining=0.25, tier="paid"),
        queued(running=True, pool="gone"),
        queued(tier="paid", created_at=NOW - 90),
    ]
    demands = pool_demands([pool("a", 0.3, 4)], items, NOW, {"a": NOW - 500}, {"RTX 4090": 0.02})
    paid = demands["a"].tiers["paid"]
    assert (paid.running, paid.queued, paid.priority) == (1, 1, 10)
    assert paid.running_remaining_units == 0.5 and paid.oldest_queued_seconds == 90
    assert demands["a"].last_busy_at == NOW  # busy now, whatever the last end was
    assert demands["a"].seconds_per_unit == 0.02


def test_an_idle_pool_remembers_when_it_was_last_busy() -> None:
    demands = pool_demands([pool("a", 0.3, 4)], [], NOW, {"a": NOW - 500}, {})
    assert demands["a"].queued == 0 and demands["a"].last_busy_at == NOW - 500


def test_scale_in_candidates_join_instances_with_their_workers() -> None:
    instances = [
        Instance("i-busy", "n1", InstanceState.running, started_at=1.0),
        Instance("i-idle", "n2", InstanceState.running, started_at=2.0),
        Instance("i-new", "n3", InstanceState.running, started_at=3.0),  # never claimed
        Instance("i-boot", "n4", InstanceState.starting, started_at=4.0),
        Instance("i-gone", "n5", InstanceState.stopping),
    ]
    activity = {
        "n1": NodeActivity(busy=True, drain_requested=True),
        "n2": NodeActivity(idle_since=50.0),
        "n4": NodeActivity(),
    }
    by_id = {c.instance_id: c for c in scale_in_candidates(instances, activity)}
    assert set(by_id) == {"i-busy", "i-idle", "i-new", "i-boot"}
    assert by_id["i-busy"].busy and by_id["i-busy"].draining
    assert by_id["i-idle"].ready and by_id["i-idle"].idle_since == 50.0
    assert not by_id["i-new"].ready and not by_id["i-boot"].ready
