"""A compatibility client that hangs up while its request waits cancels the request's jobs:
a real HTTP client (httpx) against an orchestrator on a real port, with no worker, so the
jobs wait queued until the client's read timeout closes the connection."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from imagefleet.config import Settings
from imagefleet.orchestrator.app import create_app
from imagefleet.store.database import Database
from imagefleet.store.models import Model
from tests.conftest import Keys
from tests.harness.servers import serving

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
# Long enough that only the client's hang-up can end the wait within the test.
WAIT_SECONDS = 120.0
GIVE_UP_AFTER = 30.0


@pytest.fixture
def base(settings: Settings, db: Database, keys: Keys, model: Model) -> Iterator[str]:
    app_settings = settings.model_copy(
        update={"compat_default_model": "demo", "compat_wait_seconds": WAIT_SECONDS}
    )
    with serving(create_app(app_settings, run_duties=False)) as url:
        yield url


def hang_up_on(base: str, token: str, path: str, body: dict[str, Any]) -> None:
    """Posts, then closes the connection when no answer came within a second."""
    client = httpx.Client(base_url=base, timeout=httpx.Timeout(10.0, read=1.0))
    with client, pytest.raises(httpx.ReadTimeout):
        client.post(path, json=body, headers={"Authorization": f"Bearer {token}"})


def statuses_once_settled(base: str, token: str, count: int) -> list[str]:
    """The key's job statuses once `count` jobs exist and none is queued any more: polled
    until that holds, bounded so that a broken cancel fails instead of hanging."""
    statuses: list[str] = []
    deadline = time.monotonic() + GIVE_UP_AFTER
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as api:
        while time.monotonic() < deadline:
            statuses = [j["status"] for j in api.get("/v1/jobs").json()["jobs"]]
            if len(statuses) == count and "queued" not in statuses:
                break
            time.sleep(0.1)
    return statuses


def test_an_openai_client_that_hangs_up_cancels_its_job(base: str, keys: Keys) -> None:
    hang_up_on(base, keys.alice_token, "/v1/images/generations", {"prompt": "a fox", "n": 1})
    assert statuses_once_settled(base, keys.alice_token, 1) == ["cancelled"]


def test_an_a1111_client_that_hangs_up_cancels_its_jobs(base: str, keys: Keys) -> None:
    body = {"prompt": "a fox", "width": 64, "height": 64, "steps": 2, "n_iter": 2}
    hang_up_on(base, keys.bob_token, "/sdapi/v1/txt2img", body)
    assert statuses_once_settled(base, keys.bob_token, 2) == ["cancelled", "cancelled"]
