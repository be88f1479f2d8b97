"""Deployments under concurrency, on PostgreSQL (SQLite serializes writers and would hide
every race here): two replicas, many threads. First deploys of one new name, alias promotes and
rollbacks must each behave as if they ran one after another: no 500s, no lost moves, version
numbers without gaps or repeats."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Barrier
from typing import Any

import pytest
from fastapi.testclient import TestClient

from imagefleet.config import Settings
from imagefleet.deployments import pack
from imagefleet.orchestrator.app import create_app
from imagefleet.store.database import Database
from imagefleet.store.keys import create_key
from imagefleet.store.models import Model
from tests.conftest import Keys
from tests.deploy_packages import python_package
from tests.integration.test_kinds_api import auth

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

THREADS = 8


@pytest.fixture
def replicas(settings: Settings, keys: Keys, model: Model) -> Iterator[list[TestClient]]:
    with (
        TestClient(create_app(settings, run_duties=False)) as one,
        TestClient(create_app(settings, run_duties=False)) as two,
    ):
        yield [one, two]


@pytest.fixture
def deployer(db: Database) -> str:
    with db.write() as conn:
        _, token = create_key(conn, name="carol", scope="deploy", tier="free", now=1.0)
    return token


def at_once(count: int, call: Callable[[int], Any]) -> list[Any]:
    """Runs `call(i)` for i < count on as many threads, released together by a barrier."""
    barrier = Barrier(count)

    def released(i: int) -> Any:
        barrier.wait()
        return call(i)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(released, range(count)))


def deploy(api: TestClient, token: str, data: bytes) -> Any:
    return api.put(
        "/v1/deployments/stylize/versions",
        content=data,
        headers={**auth(token), "Content-Type": "application/gzip"},
    )


def production(answer: Any) -> tuple[str, str | None]:
    alias = next(a for a in answer.json()["aliases"] if a["alias"] == "production")
    return alias["version"], alias["previous_version"]


def test_first_deploys_of_one_name_from_many_threads_number_versions_without_gaps(
    replicas: list[TestClient], deployer: str, tmp_path: Path
) -> None:
    packages = [pack(python_package(tmp_path / f"v{i}", f"v{i}")) for i in range(THREADS)]
    answers = at_once(THREADS, lambda i: deploy(replicas[i % 2], deployer, packages[i]))
    assert [a.status_code for a in answers] == [201] * THREADS, [a.text for a in answers]
    numbers = sorted(a.json()["version"]["number"] for a in answers)
    assert numbers == list(range(1, THREADS + 1))
    listed = replicas[0].get("/v1/deployments/stylize", headers=auth(deployer)).json()
    assert len(listed["versions"]) == THREADS


def test_concurrent_promotes_and_rollbacks_are_serial_and_lose_no_move(
    replicas: list[TestClient], deployer: str, tmp_path: Path
) -> None:
    versions = []
    for i in range(THREADS + 2):
        answer = deploy(replicas[0], deployer, pack(python_package(tmp_path / f"v{i}", f"v{i}")))
        versions.append(answer.json()["version"]["version"])

    def promote(api: TestClient, version: str) -> Any:
        return api.post(
            "/v1/deployments/stylize/aliases/production",
            json={"version": version},
            headers=auth(deployer),
        )

    assert promote(replicas[0], versions[0]).status_code == 200
    assert production(promote(replicas[0], versions[1])) == (versions[1], versions[0])

    # Rollbacks swap (version, previous): after an even number the alias is back where it was,
    # and exactly half of the answers saw each state. A lost update would break the count.
    rollbacks = at_once(
        2 * THREADS,
        lambda i: replicas[i % 2].post(
            "/v1/deployments/stylize/aliases/production/rollback", headers=auth(deployer)
        ),
    )
    assert [r.status_code for r in rollbacks] == [200] * (2 * THREADS)
    states = [production(r) for r in rollbacks]
    assert states.count((versions[0], versions[1])) == THREADS
    assert states.count((versions[1], versions[0])) == THREADS

    # Promotes to distinct versions: each remembers the one before it, so the answers chain
    # from the starting version through every target exactly once.
    targets = versions[2:]
    moves = at_once(THREADS, lambda i: promote(replicas[i % 2], targets[i]))
    assert [m.status_code for m in moves] == [200] * THREADS
    follows = {previous: version for version, previous in map(production, moves)}
    chain, at = [], versions[1]
    while at in follows:
        at = follows.pop(at)
        chain.append(at)
    assert sorted(chain) == sorted(targets) and not follows
    final = replicas[1].get("/v1/deployments/stylize", headers=auth(deployer)).json()
    alias = next(a for a in final["aliases"] if a["alias"] == "production")
    assert alias["version"] == chain[-1]
