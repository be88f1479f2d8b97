"""JSON bodies over the limit answer 413 over a real connection, whether their length was
declared or they were streamed chunked (no Content-Length), and smaller chunked bodies are
read whole as usual."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from imagefleet.config import Settings
from imagefleet.orchestrator.app import create_app
from imagefleet.store.models import Model
from tests.conftest import Keys, sqlite_url
from tests.harness.servers import serving

LIMIT = 64 * 1024
CHUNK = 4096


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: the limit is enforced before any route or store is reached."""
    return sqlite_url(tmp_path)


@pytest.fixture
def url(settings: Settings, keys: Keys, model: Model) -> Iterator[str]:
    limited = settings.model_copy(update={"max_body_bytes": LIMIT})
    with serving(create_app(limited, run_duties=False)) as base:
        yield base


def chunks(body: bytes) -> Iterator[bytes]:
    """A generator body: httpx sends it with Transfer-Encoding: chunked."""
    for start in range(0, len(body), CHUNK):
        yield body[start : start + CHUNK]


def submit_body(prompt: str) -> bytes:
    params = {"prompt": prompt, "model": "demo", "width": 64, "height": 64}
    return json.dumps({"kind": "txt2img", "params": params}).encode()


def post_chunked(url: str, token: str, body: bytes) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    with httpx.Client(base_url=url, timeout=30) as http:
        request = http.build_request("POST", "/v1/jobs", content=chunks(body), headers=headers)
        assert "content-length" not in request.headers
        assert request.headers["transfer-encoding"] == "chunked"
        return http.send(request)


def test_a_chunked_body_over_the_limit_answers_413_not_a_parse_error(url: str, keys: Keys) -> None:
    response = post_chunked(url, keys.alice_token, submit_body("x" * (LIMIT + 1)))
    assert response.status_code == 413
    assert f"larger than {LIMIT} bytes" in response.json()["detail"]


def test_a_chunked_body_under_the_limit_is_read_whole_and_accepted(url: str, keys: Keys) -> None:
    body = submit_body("a lighthouse")
    body += b" " * (LIMIT - len(body))  # JSON may end in white space: exactly at the limit
    response = post_chunked(url, keys.alice_token, body)
    assert response.status_code == 201, response.text
    assert response.json()["params"]["prompt"] == "a lighthouse"


def test_a_declared_length_over_the_limit_answers_413_before_the_body_is_read(
    url: str, keys: Keys
) -> None:
    with httpx.Client(base_url=url, timeout=30) as http:
        response = http.post(
            "/v1/jobs",
            content=submit_body("x" * (LIMIT + 1)),
            headers={"Authorization": f"Bearer {keys.alice_token}"},
        )
    assert response.status_code == 413
