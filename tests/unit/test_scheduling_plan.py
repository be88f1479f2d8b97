"""Capacity planning on a tiny traffic: the cheapest fleet that meets a p95 wait target."""

from __future__ import annotations

from typing import Any

from imagefleet.scheduling.policies import make_policy
from imagefleet.scheduling.simulator.config import PlanSpec, SimConfig, parse_config
from imagefleet.scheduling.simulator.plan import plan
from imagefleet.scheduling.simulator.workload import generate

GPUS = [
    {"name": "RTX 4090", "count": 2, "seconds_per_unit": 5.0, "hourly_usd": 0.35, "vram_gb": 24,
     "disk_gb": 100, "bandwidth_mb_s": 500, "interruptions_per_hour": 0.0},
    {"name": "H100", "count": 0, "seconds_per_unit": 2.5, "hourly_usd": 2.2, "vram_gb": 80,
     "disk_gb": 200, "bandwidth_mb_s": 1000, "interruptions_per_hour": 0.0},
]  # fmt: skip


def tiny(**plan_fields: Any) -> SimConfig:
    return parse_config(
        {
            "seed": 5,
            "workload": {
                "hours": 0.2,
                "offered_load": 0.7,
                "checkpoints": {"count": 20, "zipf": 1.5},
                "loras": {"count": 50, "zipf": 1.0},
                "spike": {"duration_s": 0},
                "batch_clients": [],
            },
            "fleet": {"gpus": GPUS},
            "plan": {"max_per_type": 4, "max_simulations": 30, **plan_fields},
        }
    )


def run(config: SimConfig) -> Any:
    return plan(config, generate(config), make_policy("model-aware", config.policy_config()))


def test_the_plan_is_the_cheapest_fleet_found_that_meets_the_target() -> None:
    config = tiny(target_p95_s=90.0)
    result = run(config)
    assert result.best is not None
    assert result.best.meets_target and result.best.p95_s <= 90.0
    meeting = [p for p in result.tried if p.meets_target]
    assert result.best.cost_per_day_usd == min(p.cost_per_day_usd for p in meeting)
    assert result.best.cost_per_day_usd == 24 * sum(
        n * {"RTX 4090": 0.35, "H100": 2.2}[name] for name, n in result.best.counts.items()
    )
    assert result.best.cost_per_image_usd > 0
    assert "keeps paid p95 wait at" in result.message
    assert not result.exhausted


def test_an_impossible_target_says_no_fleet_within_the_bounds_meets_it() -> None:
    result = run(tiny(target_p95_s=0.1))
    assert result.best is None
    assert len(result.tried) == 1  # the largest fleet within bounds, and it already misses
    assert result.tried[0].counts == {"RTX 4090": 4, "H100": 4}
    assert result.message.startswith(
        "no fleet within the search bounds keeps paid p95 wait under 0.1 s"
    )


def test_the_search_stops_at_its_simulation_budget() -> None:
    config = tiny(target_p95_s=90.0, max_simulations=2)
    result = plan(
        config,
        generate(config),
        make_policy("model-aware", config.policy_config()),
        PlanSpec(target_p95_s=90.0, max_per_type=4, max_simulations=2),
    )
    assert len(result.tried) == 2
    assert result.exhausted
