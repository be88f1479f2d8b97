"""bench/gpu.py's own arithmetic: prices, the toy cases, the models a selection needs, and the
figures it reports (the GPU runs themselves need a lent GPU)."""

from __future__ import annotations

import argparse

import pytest

from bench.gpu import CASES, CaseFigures, needed_models, parse_prices


def test_prices_parse_and_bad_ones_are_refused() -> None:
    assert parse_prices("RTX 4090=0.69, A100=1.64,") == {"RTX 4090": 0.69, "A100": 1.64}
    with pytest.raises(argparse.ArgumentTypeError):
        parse_prices("RTX 4090")
    with pytest.raises(argparse.ArgumentTypeError):
        parse_prices("free=0")


def test_the_issue_cases_and_their_toy_versions() -> None:
    assert [(c.width, c.height, c.steps, c.refiner_steps) for c in CASES] == [
        (512, 512, 30, None),
        (1024, 1024, 30, None),
        (512, 512, 30, None),
        (1024, 1024, 30, None),
        (1216, 896, 20, 15),
    ]
    for toy in (c.toy() for c in CASES):
        assert toy.width % 8 == 0 and toy.height % 8 == 0 and toy.steps >= 2
    assert needed_models(list(CASES[:2])) == ["sd15"]
    assert needed_models([CASES[4]]) == ["sdxl", "refiner"]


def test_overhead_and_images_per_dollar() -> None:
    figures = CaseFigures(CASES[0], bare=[1.0, 1.0], stack=[1.02, 1.02])
    figures.worker_pipeline = [1.0, 1.0]
    figures.stages = {"orchestrator total": [1.01, 1.01]}
    summary = figures.summary({"GPU": 3.6})
    assert summary["overhead_pct"] == pytest.approx(2.0)
    assert summary["outside_pipeline_s_median"] == pytest.approx(0.02)
    assert summary["imagefleet_images_per_usd"]["GPU"] == pytest.approx(1000 / 1.02)
    assert summary["client_beyond_orchestrator_s_median"] == pytest.approx(0.01)
