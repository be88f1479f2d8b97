"""bench/hot_routes.py still runs against the app as it is (a route's signature change once
broke it unnoticed): a few requests of each kind, every figure present."""

from __future__ import annotations

import asyncio

from bench import hot_routes


def test_the_hot_routes_benchmark_measures_every_call_and_hand_off() -> None:
    figures = asyncio.run(hot_routes.measure(requests=32, rounds=1))
    assert set(figures) == set(hot_routes.CALLS)
    for measured in figures.values():
        assert set(measured) == {
            "fastapi_us",
            "lean_us",
            "anyio_1",
            "anyio_16",
            "run_blocking_1",
            "run_blocking_16",
        }
        assert all(value > 0 for value in measured.values())
