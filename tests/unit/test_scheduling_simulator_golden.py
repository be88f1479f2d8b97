"""A fixed-seed simulation's report, number for number, against one recorded before the
simulator's hot loop was optimised: speed-ups must not change what a run measures.

The run is small (the test suite's budget) but goes through every path the optimisations touch:
all four policies, the candidate indexes and fair heads, parked workers, warm-worker deferral,
node interruptions (requeued jobs, failed nodes) and repeated combos. The floats are compared
exactly: the optimised code performs the same arithmetic in the same order.

To re-record after a change that is meant to change results (and say so in the commit):
`.venv/bin/python -m tests.unit.test_scheduling_simulator_golden`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from imagefleet.scheduling.policies import POLICY_NAMES
from imagefleet.scheduling.simulator.compare import compare
from imagefleet.scheduling.simulator.workload import generate
from tests.unit.test_scheduling_simulator import SMALL_FLEET, small

GOLDEN = Path(__file__).parent / "data" / "simulator_golden.json"


def golden_config() -> Any:
    gpus = [{**gpu, "interruptions_per_hour": 2.0} for gpu in SMALL_FLEET]
    return small(
        workload__hours=0.5,
        workload__offered_load=0.95,
        fleet={"gpus": gpus, "replacement_delay_s": 60},
    )


def run() -> dict[str, Any]:
    config = golden_config()
    results = compare(config, generate(config), list(POLICY_NAMES))
    # Through JSON, as recorded: tuples become lists, float keys strings.
    return json.loads(json.dumps({r.policy: r.summary() for r in results}, sort_keys=True))


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_a_fixed_seed_run_reports_exactly_what_it_reported_before(name: str) -> None:
    recorded = json.loads(GOLDEN.read_text())
    assert run_once()[name] == recorded[name]


_cache: dict[str, Any] = {}


def run_once() -> dict[str, Any]:
    if not _cache:
        _cache.update(run())
    return _cache


if __name__ == "__main__":
    GOLDEN.write_text(json.dumps(run(), indent=1, sort_keys=True) + "\n")
    print(f"recorded {GOLDEN}")
