"""API keys cached per replica for a short TTL: revocation is honoured within it."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from imagefleet.config import Settings
from imagefleet.orchestrator.app import create_app
from imagefleet.orchestrator.auth import KeyCache
from imagefleet.store.database import Database
from imagefleet.store.keys import ApiKey, create_key, revoke_key

KEY = ApiKey("k1", "alice", "client", "free", 1.0, None)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_cached_key_expires_after_its_ttl() -> None:
    clock = Clock()
    cache = KeyCache(5.0, clock=clock)
    cache.put("if_k1_secret", KEY)
    clock.now += 4.9
    assert cache.get("if_k1_secret") == KEY
    assert cache.get("if_k1_other") is None
    clock.now += 0.1
    assert cache.get("if_k1_secret") is None


def test_forget_drops_every_token_of_a_key_and_a_zero_ttl_caches_nothing() -> None:
    cache = KeyCache(5.0)
    cache.put("if_k1_secret", KEY)
    cache.forget("k1")
    assert cache.get("if_k1_secret") is None
    off = KeyCache(0.0)
    off.put("if_k1_secret", KEY)
    assert off.get("if_k1_secret") is None


def test_the_cache_stays_bounded() -> None:
    cache = KeyCache(5.0, max_entries=2)
    for i in range(5):
        cache.put(f"if_k1_{i}", KEY)
    assert len(cache._entries) <= 2


def test_a_revoked_key_is_refused_once_the_replica_cache_ttl_has_passed(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, rate_limit_per_second=0, key_cache_seconds=5.0)
    db = Database(settings.database_url)
    db.upgrade()
    with db.write() as conn:
        key, token = create_key(conn, name="alice", scope="client", tier="free", now=1.0)
    clock = Clock()
    with TestClient(create_app(settings, run_duties=False)) as api:
        api.app.state.key_cache.clock = clock  # type: ignore[attr-defined]
        headers = {"Authorization": f"Bearer {token}"}
        assert api.get("/v1/jobs", headers=headers).status_code == 200
        with db.write() as conn:
            revoke_key(conn, key.id, 2.0)
        clock.now += 4.0  # within the TTL: this replica still trusts its cached lookup
        assert api.get("/v1/jobs", headers=headers).status_code == 200
        clock.now += 1.0
        assert api.get("/v1/jobs", headers=headers).status_code == 401
    db.dispose()
