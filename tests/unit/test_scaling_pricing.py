"""Cost accounting against hand-computed figures for one known run.

The run: pool `salad-4090` (RTX 4090 at $0.36/h = $0.0001/s) and pool `a100` (A100 at the GPU
price $1.80/h = $0.0005/s); a T4 worker with no price anywhere.

| attempt | job | worker | pool      | claimed | ended | outcome       | images | units | steps |
|---------|-----|--------|-----------|---------|-------|---------------|--------|-------|-------|
| a1      | A   | w1     | salad-4090| 1000    | 1030  | failed        | 0      | 40    |       |
| a2      | A   | w2     | salad-4090| 1040    | 1100  | succeeded     | 4      | 40    |       |
| c1      | C   | w1     | salad-4090| 1200    | 1260  | succeeded     | 1      | 10    |       |
| b1      | B   | w3     | a100      | 1000    | 1400  | lease_expired | 0      | 3000  | 200   |
| b2      | B   | w3     | a100      | 1500    | 2100  | succeeded     | 0      | 3000  | 300   |
| d1      | D   | w4     | (none)    | 1100    | 1200  | succeeded     | 1      | 10    |       |

Worker spans known from the workers table: w1 900..1500, w2 1035..1200 (w3 and w4: none).
"""

from __future__ import annotations

import pytest

from imagefleet.scaling.pools import parse_pools
from imagefleet.scaling.pricing import (
    AttemptRecord,
    PriceTable,
    WorkerSpan,
    attempt_cost,
    billable_seconds,
    fleet_usage,
    job_costs,
    seconds_per_unit,
)

PRICES = PriceTable(by_pool={"salad-4090": 0.36}, by_gpu={"A100": 1.80, "RTX 4090": 9.99})


def attempt(
    attempt_id: str,
    job_id: str,
    worker: str,
    pool: str | None,
    gpu: str,
    claimed: float,
    ended: float | None,
    outcome: str,
    images: int = 0,
    units: float = 0.0,
    steps: int = 0,
) -> AttemptRecord:
    return AttemptRecord(
        job_id, attempt_id, worker, pool, gpu, claimed, ended, outcome, images, units, steps
    )


RUN = [
    attempt("a1", "A", "w1", "salad-4090", "RTX 4090", 1000, 1030, "failed", 0, 40),
    attempt("a2", "A", "w2", "salad-4090", "RTX 4090", 1040, 1100, "succeeded", 4, 40),
    attempt("c1", "C", "w1", "salad-4090", "RTX 4090", 1200, 1260, "succeeded", 1, 10),
    attempt("b1", "B", "w3", "a100", "A100", 1000, 1400, "lease_expired", 0, 3000, 200),
    attempt("b2", "B", "w3", "a100", "A100", 1500, 2100, "succeeded", 0, 3000, 300),
    attempt("d1", "D", "w4", None, "T4", 1100, 1200, "succeeded", 1, 10),
]
SPANS = [
    WorkerSpan("w1", "salad-4090", "RTX 4090", 900, 1500),
    WorkerSpan("w2", "salad-4090", "RTX 4090", 1035, 1200),
]


def test_an_attempt_is_billed_from_claim_to_end_or_to_now_while_it_runs() -> None:
    assert billable_seconds(RUN[0], now=5000) == 30
    running = attempt("r", "R", "w1", "salad-4090", "RTX 4090", 1200, None, "running")
    assert billable_seconds(running, now=1290) == 90
    assert attempt_cost(running, PRICES, now=1290) == pytest.approx(0.009)


def test_the_pool_price_wins_over_the_gpu_price() -> None:
    assert attempt_cost(RUN[1], PRICES, now=0) == pytest.approx(60 * 0.0001)


def test_a_jobs_cost_includes_its_failed_attempts() -> None:
    costs = job_costs(RUN, PRICES, now=3000)
    job_a = costs["A"]
    assert job_a.attempts == 2
    assert job_a.billable_seconds == 90
    assert job_a.cost == pytest.approx(0.009)
    assert job_a.cost_per_image == pytest.approx(0.00225)


def test_a_training_jobs_cost_per_step_spans_its_interrupted_attempt() -> None:
    job_b = job_costs(RUN, PRICES, now=3000)["B"]
    assert job_b.billable_seconds == 1000
    assert job_b.cost == pytest.approx(0.5)
    assert job_b.training_steps == 500
    assert job_b.cost_per_step == pytest.approx(0.001)
    assert job_b.cost_per_image is None


def test_time_on_an_unpriced_worker_is_reported_not_guessed() -> None:
    job_d = job_costs(RUN, PRICES, now=3000)["D"]
    assert job_d.cost == 0
    assert job_d.unpriced_seconds == 100


def test_fleet_usage_per_pool_over_a_window() -> None:
    usage = {u.pool: u for u in fleet_usage(RUN, PRICES, start=1000, end=1600, spans=SPANS)}
    salad = usage["salad-4090"]
    assert salad.images == 5
    assert salad.busy_seconds == 150
    assert salad.paid_seconds == 665  # w1 1000..1500 + w2 1035..1200
    assert salad.cost == pytest.approx(0.0665)
    assert salad.images_per_hour == pytest.approx(30.0)
    assert salad.seconds_per_image == pytest.approx(30.0)
    assert salad.images_per_dollar == pytest.approx(5 / 0.0665)
    assert salad.idle_share == pytest.approx(515 / 665)


def test_fleet_usage_clips_attempts_to_the_window_and_derives_missing_spans() -> None:
    a100 = next(u for u in fleet_usage(RUN, PRICES, 1000, 1600, SPANS) if u.pool == "a100")
    assert a100.busy_seconds == 500  # b1 whole, b2's first 100 s
    assert a100.paid_seconds == 600  # w3 up from its first claim to the window's end
    assert a100.cost == pytest.approx(0.3)
    assert a100.idle_share == pytest.approx(1 / 6)
    assert a100.images == 0
    assert a100.images_per_dollar == 0


def test_fleet_usage_of_an_unpriced_gpu_has_no_cost_figures() -> None:
    t4 = next(u for u in fleet_usage(RUN, PRICES, 1000, 1600, SPANS) if u.gpu == "T4")
    assert t4.cost is None
    assert t4.images_per_dollar is None
    assert t4.images == 1


def test_seconds_per_unit_from_succeeded_attempts_per_gpu() -> None:
    assert seconds_per_unit(RUN) == {
        "RTX 4090": pytest.approx(120 / 50),
        "A100": pytest.approx(600 / 3000),
        "T4": pytest.approx(10.0),
    }


def test_price_table_from_a_pools_file() -> None:
    config = parse_pools(
        '[prices]\n"A100" = 1.8\n[pools.a]\ngpu = "A100"\nvram_mb = 1\nmax = 1\n'
        '[pools.a.provider]\ntype = "local"\n'
    )
    table = PriceTable.from_config(config)
    assert table.hourly("a", "A100") == 1.8
    assert table.hourly("other", "A100") == 1.8
    assert table.hourly("other", "T4") is None
