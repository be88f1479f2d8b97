"""Fair-share start tags for the claim's preselection (ranking: test_scheduling_policy)."""

from __future__ import annotations

import pytest

from imagefleet.scheduling.fairness import advance, fair_tag


def test_a_batch_gets_tags_far_ahead_and_a_newcomer_the_current_virtual_time() -> None:
    finish: float | None = None
    tags = []
    for _ in range(1000):
        tag, finish = fair_tag(0.0, finish, cost_units=2.0)
        tags.append(tag)
    assert tags[:3] == [0.0, 2.0, 4.0]
    assert tags[-1] == 1998.0
    newcomer, _ = fair_tag(10.0, None, cost_units=2.0)
    assert newcomer == 10.0 < tags[10]


def test_an_idle_owner_banks_no_credit() -> None:
    tag, _ = fair_tag(virtual_time=500.0, owner_finish=3.0, cost_units=1.0)
    assert tag == 500.0


def test_weights_give_an_owner_a_larger_share() -> None:
    _, light = fair_tag(0.0, None, cost_units=2.0, weight=1.0)
    _, heavy = fair_tag(0.0, None, cost_units=2.0, weight=2.0)
    assert (light, heavy) == (2.0, 1.0)
    with pytest.raises(ValueError, match="weight: must be > 0"):
        fair_tag(0.0, None, cost_units=1.0, weight=0)


def test_the_virtual_time_follows_the_queue_head_and_never_moves_back() -> None:
    assert advance(5.0, 9.0) == 9.0
    assert advance(5.0, 2.0) == 5.0  # a requeued job with an old tag
    assert advance(5.0, None) == 5.0  # the tier's queue is empty
