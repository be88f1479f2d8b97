"""Round robin between owners across orchestrator replicas: the owners' last claims live in the
database (`store.owner_service`), so two replicas on one database take the same turns as one.

Runs on both dialects (the `lifecycle` fixture's database); the PostgreSQL case is the one two
real replicas would share."""

from __future__ import annotations

from imagefleet.config import Settings
from imagefleet.orchestrator.lifecycle import JobLifecycle
from imagefleet.store import owner_service
from imagefleet.store.database import Database
from imagefleet.store.keys import ApiKey, create_key
from imagefleet.store.models import Model
from tests.conftest import Clock, Keys
from tests.unit.test_claim_policy import checkpoints, claim, submit

__all__ = ["checkpoints"]  # the fixture, imported for its tests


def serve_in_turn(
    replicas: list[JobLifecycle],
    db: Database,
    keys: Keys,
    clock: Clock,
    alpha: Model,
    carol: ApiKey,
) -> list[str]:
    """A 20-job batch from alice, then one job from carol; three claims, handed to the replicas
    in turn. The jobs claimed, in order."""
    batch = []
    for _ in range(20):
        batch.append(submit(replicas[0], keys.alice))
        clock.advance(0.01)
    single = submit(replicas[0], carol)
    clock.advance(1)
    claimed = []
    for index in range(3):
        assignment = claim(replicas[index % len(replicas)], keys, f"w{index}", cached=(alpha,))
        assert assignment is not None
        claimed.append(assignment.job_id)
    assert claimed[0] == batch[0]
    return ["carol" if job == single else "alice" for job in claimed]


def test_two_replicas_on_one_database_take_the_same_turns_between_owners_as_one(
    db: Database,
    settings: Settings,
    keys: Keys,
    checkpoints: dict[str, Model],
    clock: Clock,
) -> None:
    with db.write() as conn:
        carol, _ = create_key(conn, name="carol", scope="client", tier="free", now=1.0)
    first = JobLifecycle(db, settings, clock=clock)
    second = JobLifecycle(db, settings, clock=clock)
    order = serve_in_turn([first, second], db, keys, clock, checkpoints["alpha"], carol)
    # Replica 1 served alice; replica 2 must know it, and give carol her turn next.
    assert order == ["alice", "carol", "alice"]
    with db.read() as conn:
        served = owner_service.served_at(conn, [keys.alice.id, carol.id, "nobody"])
    assert set(served) == {keys.alice.id, carol.id}
    assert served[keys.alice.id] >= served[carol.id]


def test_a_turn_recorded_by_one_replica_never_moves_back_when_another_records_an_older_one(
    db: Database,
) -> None:
    with db.write() as conn:
        owner_service.record_served(conn, "owner-a", 100.0)
        owner_service.record_served(conn, "owner-a", 90.0)  # a replica with a slower clock
        owner_service.record_served(conn, "owner-b", 50.0)
    with db.read() as conn:
        assert owner_service.served_at(conn, ["owner-a", "owner-b"]) == {
            "owner-a": 100.0,
            "owner-b": 50.0,
        }
    with db.write() as conn:
        owner_service.record_served(conn, "owner-a", 120.0)
    with db.read() as conn:
        assert owner_service.served_at(conn, ["owner-a"]) == {"owner-a": 120.0}
