"""The chaos harness in CI: bench/chaos.py at a size two cores finish in well under 3 minutes.

100 jobs, 3 workers killed with SIGKILL at random (a replacement each time), one orchestrator
restart with SIGKILL while the workers are busy, SQLite. The harness audits the database
afterwards; any broken invariant is in `report.violations`, and the logs stay under tmp_path.
The engine and registry tests at the end pin down the contract the harness relies on.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.chaos_lib.config import SLEEP_ENGINE, ChaosConfig  # noqa: E402
from bench.chaos_lib.run import run_chaos  # noqa: E402
from imagefleet.worker.engines.base import (  # noqa: E402
    GenerationCancelled,
    Txt2ImgRequest,
)
from imagefleet.worker.engines.registry import EngineSpecError, load_engine  # noqa: E402
from tests.chaos_engine import SleepEngine  # noqa: E402

pytestmark = pytest.mark.e2e


def test_every_acknowledged_job_succeeds_exactly_once_through_kills_and_a_restart(
    tmp_path: Path,
) -> None:
    config = ChaosConfig(
        jobs=100,
        workers=3,
        kill_every=5.0,
        orchestrator_restarts=1,
        backend="sqlite",
        timeout=150.0,
        seed=7,
        sleep_min=0.1,
        sleep_max=0.5,
        scratch=tmp_path / "chaos",
        keep=True,  # under tmp_path: pytest prunes it, and a failure leaves the logs to read
    )
    report = run_chaos(config, say=print)
    print(report.table())
    assert report.violations == []
    assert report.succeeded == config.jobs
    assert report.duplicates == 0
    assert report.lost == 0
    assert report.kills >= 1
    assert [restart.signal for restart in report.restarts] == ["SIGKILL"]


def _request(steps: int = 4, num_images: int = 2) -> Txt2ImgRequest:
    return Txt2ImgRequest(
        prompt="p",
        negative_prompt=None,
        width=64,
        height=48,
        steps=steps,
        guidance_scale=7.0,
        seed=10,
        num_images=num_images,
        scheduler="euler",
    )


def test_the_sleep_engine_reports_every_step_and_returns_one_image_per_seed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IMAGEFLEET_CHAOS_SLEEP_MIN", "0.01")
    monkeypatch.setenv("IMAGEFLEET_CHAOS_SLEEP_MAX", "0.02")
    engine = SleepEngine()
    assert engine.load("abc", Path("/nowhere")) == 0.0
    assert engine.resident_model == "abc"
    steps: list[tuple[int, int]] = []
    images = engine.txt2img(_request(), lambda done, total: steps.append((done, total)), bool)
    assert steps == [(done, 8) for done in range(1, 9)]
    assert [image.seed for image in images] == [10, 11]
    assert all(image.image.size == (64, 48) for image in images)
    again = engine.txt2img(_request(), lambda *_: None, bool)
    assert [a.image.tobytes() for a in again] == [b.image.tobytes() for b in images]


def test_the_sleep_engine_stops_between_steps_with_the_workers_own_cancellation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IMAGEFLEET_CHAOS_SLEEP_MIN", "5")
    monkeypatch.setenv("IMAGEFLEET_CHAOS_SLEEP_MAX", "5")
    checks = iter([False, False, True])
    with pytest.raises(GenerationCancelled):
        SleepEngine().txt2img(
            _request(steps=2, num_images=1), lambda *_: None, lambda: next(checks)
        )


def test_a_plug_in_engine_spec_builds_that_class_for_the_device() -> None:
    engine = load_engine(SLEEP_ENGINE, "cuda:1")
    assert isinstance(engine, SleepEngine)
    assert engine.device == "cuda:1"


@pytest.mark.parametrize(
    "spec",
    [
        "sleep",
        "tests.chaos_engine",
        "tests.chaos_engine:Nope",
        "no_such_module:X",
        "os:sep",
        "io:StringIO",
    ],
)
def test_an_engine_spec_that_names_no_engine_class_is_refused_at_start_up(spec: str) -> None:
    with pytest.raises(EngineSpecError):
        load_engine(spec)
