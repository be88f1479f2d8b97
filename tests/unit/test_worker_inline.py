"""The worker sends small outputs inside its complete call (one request, no upload)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from imagefleet.config import Settings
from imagefleet.orchestrator.app import create_app
from imagefleet.store.database import Database
from imagefleet.store.keys import create_key
from imagefleet.store.models import register_model
from imagefleet.worker.loop import Worker, WorkerConfig
from tests.chaos_engine import SleepEngine

PARAMS = {"prompt": "a lighthouse", "model": "tiny", "width": 64, "height": 64, "steps": 2}


def test_a_worker_completes_a_small_job_in_one_call_without_uploading(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path / "data", rate_limit_per_second=0)
    db = Database(settings.database_url)
    db.upgrade()
    weights = tmp_path / "tiny.safetensors"
    weights.write_bytes(b"not really weights: the sleep engine never reads them")
    with db.write() as conn:
        _, client_token = create_key(conn, name="c", scope="client", tier="free", now=1.0)
        _, worker_token = create_key(conn, name="w", scope="worker", tier="free", now=1.0)
        register_model(
            conn,
            name="tiny",
            kind="checkpoint",
            source=str(weights),
            sha256=hashlib.sha256(weights.read_bytes()).hexdigest(),
            size_bytes=weights.stat().st_size,
            now=1.0,
        )
    db.dispose()
    calls: list[str] = []
    app = create_app(settings, run_duties=False)

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            calls.append(scope["path"])
        await app(scope, receive, send)

    with TestClient(recording) as api:
        client_auth = {"Authorization": f"Bearer {client_token}"}
        job = api.post("/v1/jobs", json={"kind": "txt2img", "params": PARAMS}, headers=client_auth)
        config = WorkerConfig(
            orchestrator_url=str(api.base_url),
            key=worker_token,
            cache_dir=tmp_path / "cache",
            claim_wait_seconds=0,
        )
        worker = Worker(config, engine=SleepEngine())  # type: ignore[arg-type]
        worker.engine.sleep_min = worker.engine.sleep_max = 0.0  # type: ignore[attr-defined]
        worker.client.http.close()
        worker.client.http = TestClient(
            recording, headers={"Authorization": f"Bearer {worker_token}"}
        )
        worker.run(max_jobs=1)
        done = api.get(f"/v1/jobs/{job.json()['id']}", headers=client_auth).json()
    assert done["status"] == "succeeded", done
    assert len(done["outputs"]) == 1
    assert not [path for path in calls if "/outputs/" in path]
    assert [path for path in calls if path.endswith("/complete-inline")]
