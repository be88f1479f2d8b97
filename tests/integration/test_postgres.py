"""PostgreSQL-specific behaviour: wake-ups across replicas, outages, and start-up errors."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from imagefleet.config import Settings
from imagefleet.orchestrator.app import create_app
from tests.conftest import PgFleet
from tests.tcp_proxy import TcpProxy

PARAMS = {"prompt": "x", "model": "demo", "width": 64, "height": 64}


def test_replicas_share_one_queue_submit_on_a_claim_on_b_progress_on_c(
    empty_pg: PgFleet, tmp_path: Any
) -> None:
    url = empty_pg.url
    client = {"Authorization": f"Bearer {empty_pg.client_key}"}
    worker = {"Authorization": f"Bearer {empty_pg.worker_key}"}
    settings = Settings(data_dir=tmp_path, database_url=url, claim_wait_max_seconds=30)
    with (
        TestClient(create_app(settings, run_duties=False)) as replica_a,
        TestClient(create_app(settings, run_duties=False)) as replica_b,
        TestClient(create_app(settings, run_duties=False)) as replica_c,
    ):
        answer: dict[str, Any] = {}

        def wait_for_work() -> None:
            started = time.monotonic()
            body = {"worker_id": "w", "node_id": "n", "wait_seconds": 20}
            answer["body"] = replica_b.post("/v1/worker/claim", json=body, headers=worker).json()
            answer["seconds"] = time.monotonic() - started

        waiting = threading.Thread(target=wait_for_work)
        waiting.start()
        time.sleep(1.0)  # the claim is now parked on replica B
        job = replica_a.post("/v1/jobs", json={"kind": "txt2img", "params": PARAMS}, headers=client)
        waiting.join(timeout=30)
        attempt = answer["body"]["assignment"]["attempt_id"]
        replica_b.post(
            f"/v1/worker/attempts/{attempt}/heartbeat",
            json={"step": 3, "total_steps": 4},
            headers=worker,
        )
        seen = replica_c.get(f"/v1/jobs/{job.json()['id']}", headers=client).json()
    assert answer["body"]["assignment"]["job_id"] == job.json()["id"]
    assert seen["status"] == "running" and seen["progress"]["fraction"] == 0.75
    # Without NOTIFY the parked claim would only look again after its 10 s safety timer.
    assert answer["seconds"] < 6


def test_losing_the_database_answers_503_and_service_recovers_by_itself(
    empty_pg: PgFleet, tmp_path: Any
) -> None:
    url = empty_pg.url
    client = {"Authorization": f"Bearer {empty_pg.client_key}"}
    parsed = make_url(url)
    proxy = TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432)
    proxy.start()
    proxied = parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    settings = Settings(data_dir=tmp_path, database_url=proxied)
    with TestClient(create_app(settings, run_duties=False)) as api:
        accepted = api.post("/v1/jobs", json={"kind": "txt2img", "params": PARAMS}, headers=client)
        assert accepted.status_code == 201
        proxy.cut()
        down = api.get(f"/v1/jobs/{accepted.json()['id']}", headers=client)
        assert down.status_code == 503 and down.headers["Retry-After"]
        assert "database is unavailable" in down.json()["detail"]
        assert (
            api.post(
                "/v1/jobs", json={"kind": "txt2img", "params": PARAMS}, headers=client
            ).status_code
            == 503
        )
        proxy.start()
        back = api.get(f"/v1/jobs/{accepted.json()['id']}", headers=client)
        assert back.status_code == 200 and back.json()["status"] == "queued"
    proxy.cut()


def test_an_unreachable_database_at_start_is_a_clear_error_naming_the_url(tmp_path: Any) -> None:
    url = "postgresql://fleet:s3cret@127.0.0.1:1/imagefleet"
    result = subprocess.run(
        [sys.executable, "-m", "imagefleet", "db", "upgrade"],
        env={"IMAGEFLEET_DATABASE_URL": url, "IMAGEFLEET_DATA_DIR": str(tmp_path), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert (
        "cannot reach the database at postgresql+psycopg://fleet:***@127.0.0.1:1/imagefleet"
        in result.stderr
    )
    assert "s3cret" not in result.stderr + result.stdout
