"""The "no worker can run this" warning and the unservable failure count autoscaler pools: a
job that no worker seen can run, but that a pool (its GPU, VRAM, kinds, size and models in the
pools table) could start a worker for, is neither warned nor failed."""

from __future__ import annotations

from typing import Any

from imagefleet.orchestrator.lifecycle import JobLifecycle
from imagefleet.protocol import JobStatus
from imagefleet.scaling.pools import Pool
from imagefleet.store import pools as pool_sql
from imagefleet.store.database import Database
from imagefleet.store.models import Model
from tests.conftest import Clock, Keys
from tests.unit.test_claim_policy import checkpoints, claim, submit

__all__ = ["checkpoints"]  # the fixture, imported for its tests


def add_pool(db: Database, **fields: Any) -> None:
    values = {
        "name": "big",
        "gpu": "A100",
        "vram_mb": 81920,
        "price_per_hour": 2.0,
        "max": 2,
        "provider": {"type": "local", "args": ["--url", "http://127.0.0.1:8000"]},
        **fields,
    }
    with db.write() as conn:
        pool_sql.seed_pools(conn, [Pool.model_validate(values)], now=1.0)


def test_a_job_a_pool_could_start_a_worker_for_is_not_warned_nor_failed(
    lifecycle: JobLifecycle,
    db: Database,
    keys: Keys,
    checkpoints: dict[str, Model],
    clock: Clock,
) -> None:
    assert claim(lifecycle, keys, "small", max_pixels=64 * 64) is None  # seen, too small
    add_pool(db, max_pixels=512 * 512)
    job = lifecycle.get(keys.alice, submit(lifecycle, keys.alice, size=128))
    assert job.warning is None
    clock.advance(lifecycle.settings.unservable_after_seconds + 1)
    assert lifecycle.fail_unservable() == 0
    assert lifecycle.get(keys.alice, job.id).status is JobStatus.queued


def test_a_pool_too_small_for_the_job_or_dedicated_to_other_models_does_not_count(
    lifecycle: JobLifecycle,
    db: Database,
    keys: Keys,
    checkpoints: dict[str, Model],
) -> None:
    assert claim(lifecycle, keys, "small", max_pixels=64 * 64) is None
    add_pool(db, name="tiny", max_pixels=64 * 64)
    add_pool(db, name="other", max_pixels=512 * 512, models=["beta"])
    add_pool(db, name="off", max_pixels=512 * 512, max=0)
    job = lifecycle.get(keys.alice, submit(lifecycle, keys.alice, "alpha", size=128))
    assert job.warning is not None
