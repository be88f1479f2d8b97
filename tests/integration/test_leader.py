"""Leader election through an expiring lease row, on SQLite and PostgreSQL: one replica runs
the autoscaler; another takes over when the lease expires, or at once after a clean stop."""

from __future__ import annotations

from imagefleet.orchestrator.leader import LeaderLease
from imagefleet.store.database import Database
from tests.conftest import Clock


def test_only_the_replica_holding_the_lease_leads_and_another_takes_over_when_it_expires(
    db: Database, clock: Clock
) -> None:
    a = LeaderLease(db, ttl=15, holder="replica-a")
    b = LeaderLease(db, ttl=15, holder="replica-b")
    assert a.try_lead(clock()) and not b.try_lead(clock())
    clock.advance(10)
    assert a.try_lead(clock()) and not b.try_lead(clock())  # renewed
    clock.advance(16)  # a stopped renewing
    assert b.try_lead(clock()) and not a.try_lead(clock())
    b.release()
    assert a.try_lead(clock())  # a clean stop hands over at once
