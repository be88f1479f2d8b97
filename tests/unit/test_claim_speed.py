"""The busy-worker ETA behind the bounded wait for a warm worker uses the worker's measured
seconds per cost unit (its recent attempts, claim to end) once it has one, instead of the fixed
guess: a warm worker measured to be slow is not waited for."""

from __future__ import annotations

import pytest

from imagefleet.orchestrator.claim_policy import SECONDS_PER_UNIT
from imagefleet.orchestrator.lifecycle import JobLifecycle
from imagefleet.store import worker_state
from imagefleet.store.models import Model
from tests.conftest import Clock, Keys
from tests.unit.test_claim_policy import checkpoints, claim, complete, submit

__all__ = ["checkpoints"]  # the fixture, imported for its tests


def test_a_cold_worker_does_not_wait_for_a_warm_worker_measured_to_be_slow(
    lifecycle: JobLifecycle, keys: Keys, checkpoints: dict[str, Model], clock: Clock
) -> None:
    alpha = checkpoints["alpha"]
    first = submit(lifecycle, keys.alice, "alpha")
    row = lifecycle.get(keys.alice, first)
    combo, cost = row.combo_key, row.cost_units
    assert cost is not None and cost * SECONDS_PER_UNIT < 5  # the guess: free in a moment
    running = claim(lifecycle, keys, "warm", resident=alpha, combo=combo)
    assert running is not None
    clock.advance(25)  # under the 30 s bound for one job, yet far slower than the guess
    complete(lifecycle, keys, running)
    with lifecycle.db.read() as conn:
        measured = worker_state.measured_seconds_per_unit(conn, clock() - 600, 100)
    assert measured == {"warm": pytest.approx(25 / cost)}
    second = submit(lifecycle, keys.alice, "alpha")
    again = claim(lifecycle, keys, "warm", resident=alpha, combo=combo)
    assert again is not None and again.job_id == second
    clock.advance(2)
    third = submit(lifecycle, keys.alice, "alpha")
    # The warm worker should take another 23 s at its measured speed: the cold worker, with a
    # download of a few seconds, takes the job rather than wait (the guess said "in a moment").
    taken = claim(lifecycle, keys, "cold")
    assert taken is not None and taken.job_id == third
