"""API keys are stored hashed and checked in constant time."""

from __future__ import annotations

from sqlalchemy import select

from imagefleet.store.database import Database
from imagefleet.store.keys import authenticate, create_key, list_keys, revoke_key
from imagefleet.store.tables import api_keys


def test_only_a_hash_of_the_secret_is_stored(db: Database) -> None:
    with db.write() as conn:
        key, token = create_key(conn, name="team", scope="client", tier="paid", now=1.0)
        stored = conn.execute(select(api_keys)).mappings().one()
    secret = token.rsplit("_", 1)[-1]
    assert secret not in str(dict(stored)) and stored["secret_hash"] != secret
    assert token.startswith(f"if_{key.id}_")


def test_a_token_authenticates_until_revoked(db: Database) -> None:
    with db.write() as conn:
        key, token = create_key(conn, name="team", scope="worker", tier="free", now=1.0)
    with db.read() as conn:
        found = authenticate(conn, token)
        assert found is not None and found.scope == "worker"
        assert authenticate(conn, token[:-1] + ("A" if token[-1] != "A" else "B")) is None
        assert authenticate(conn, "Bearer " + token) is None
        assert authenticate(conn, "if_nokey") is None
    with db.write() as conn:
        assert revoke_key(conn, key.id, 2.0)
        assert not revoke_key(conn, key.id, 3.0)
    with db.read() as conn:
        assert authenticate(conn, token) is None
        assert list_keys(conn)[0].revoked_at == 2.0
