"""Pools, usage and /metrics over HTTP on a real SQLite store, with cost figures checked against
values computed by hand for a known run.

The known run (t0 an hour ago; pool `cpu` at $0.36/h = $0.0001/s, GPU type `cpu` at $0.72/h for
workers that name no pool):
- w1 (pool cpu) is first seen at t0-40, claims job A at t0, fails at t0+20;
- w1b (pool cpu) claims A again at t0+30 and completes it with 1 image at t0+70;
- w2 (no pool) claims job B at t0+100 and completes it with 2 images at t0+110.
So A costs (20 + 40) s x $0.0001 = $0.006 (per image the same); B costs 10 s x $0.0002 = $0.002
($0.001 per image). The pool was paid from t0-40 to t0+20 and t0+30 to t0+70: 100 s, $0.01,
60 s busy: idle share 0.4, 100 images per dollar, 60 s per image.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from imagefleet.config import Settings
from imagefleet.kinds.txt2img import Txt2ImgJob, Txt2ImgParams
from imagefleet.orchestrator.app import create_app
from imagefleet.orchestrator.lifecycle import JobLifecycle
from imagefleet.store.database import Database
from imagefleet.store.models import Model
from imagefleet.worker_protocol import (
    Assignment,
    ClaimRequest,
    CompletedOutput,
    CompleteRequest,
    FailRequest,
    WorkerFailureCode,
)
from tests.conftest import Clock, Keys, sqlite_url

POOLS = """
[prices]
cpu = 0.72

[pools.cpu]
gpu = "cpu"
vram_mb = 1
price_per_hour = 0.36
min = 0
max = 4
[pools.cpu.provider]
type = "command"
scale = ["true"]
replace = ["true"]
"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    pools_file = tmp_path / "pools.toml"
    pools_file.write_text(POOLS)
    return Settings(
        data_dir=tmp_path / "data",
        database_url=sqlite_url(tmp_path),
        lease_seconds=30,
        retry_backoff_seconds=0,
        pools_file=pools_file,
    )


@pytest.fixture
def api(settings: Settings, keys: Keys, model: Model) -> Iterator[TestClient]:
    with TestClient(create_app(settings, run_duties=False)) as client:
        yield client


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claim(lifecycle: JobLifecycle, keys: Keys, worker: str, pool: str | None) -> Assignment | None:
    request = ClaimRequest(worker_id=worker, node_id=f"node-{worker}", pool=pool)
    return lifecycle.claim(keys.worker, request)


def complete(lifecycle: JobLifecycle, keys: Keys, assignment: Assignment, images: int) -> None:
    for index in range(images):
        lifecycle.record_upload(
            keys.worker,
            assignment.attempt_id,
            index=index,
            key=f"jobs/{assignment.job_id}/{assignment.attempt_id}/{index}.png",
            size=10,
            sha256="0" * 64,
            content_type="image/png",
        )
    outputs = [CompletedOutput(index=i, seed=i, width=64, height=64) for i in range(images)]
    lifecycle.complete(keys.worker, assignment.attempt_id, CompleteRequest(outputs=outputs))


@pytest.fixture
def known_run(api: TestClient, db: Database, settings: Settings, keys: Keys) -> dict[str, Any]:
    t0 = time.time() - 3600
    clock = Clock(t0 - 40)
    lifecycle = JobLifecycle(db, settings, clock=clock)
    assert claim(lifecycle, keys, "w1", "cpu") is None  # seen, idle
    clock.now = t0 - 2  # A first: the older job is claimed first
    params = Txt2ImgParams(prompt="a", model="demo", width=64, height=64)
    job_a = lifecycle.submit(keys.alice, Txt2ImgJob(params=params))[0].id
    clock.now = t0 - 1
    job_b = lifecycle.submit(
        keys.alice, Txt2ImgJob(params=params.model_copy(update={"num_images": 2}))
    )[0].id
    clock.now = t0
    first = claim(lifecycle, keys, "w1", "cpu")
    assert first is not None and first.job_id == job_a
    clock.now = t0 + 20
    lifecycle.fail(keys.worker, first.attempt_id, FailRequest(code=WorkerFailureCode.worker_error))
    clock.now = t0 + 30
    again = claim(lifecycle, keys, "w1b", "cpu")
    assert again is not None and again.job_id == job_a
    clock.now = t0 + 70
    complete(lifecycle, keys, again, 1)
    clock.now = t0 + 100
    other = claim(lifecycle, keys, "w2", None)
    assert other is not None and other.job_id == job_b
    clock.now = t0 + 110
    complete(lifecycle, keys, other, 2)
    return {"t0": t0, "a": job_a, "b": job_b}


def test_the_pools_file_is_listed_with_its_settings(api: TestClient, keys: Keys) -> None:
    response = api.get("/v1/admin/pools", headers=auth(keys.admin_token))
    assert response.status_code == 200
    [pool] = response.json()
    assert pool["name"] == "cpu" and pool["settings"]["max"] == 4
    assert pool["settings"]["provider"]["type"] == "command" and pool["edited_at"] is None
    assert api.get("/v1/admin/pools", headers=auth(keys.alice_token)).status_code == 403


def test_an_edit_is_validated_like_the_file_and_a_reset_brings_the_file_back(
    api: TestClient, keys: Keys
) -> None:
    admin = auth(keys.admin_token)
    bad = api.patch("/v1/admin/pools/cpu", json={"min": 9}, headers=admin)
    assert bad.status_code == 422
    assert "must be at least min (9), got 4" in bad.json()["detail"][0]["msg"]
    assert api.patch("/v1/admin/pools/cpu", json={"max": -1}, headers=admin).status_code == 422
    assert api.patch("/v1/admin/pools/nope", json={"max": 1}, headers=admin).status_code == 404

    edited = api.patch("/v1/admin/pools/cpu", json={"max": 8, "price_per_hour": 0.5}, headers=admin)
    assert edited.status_code == 200
    assert edited.json()["settings"]["max"] == 8 and edited.json()["edited_at"] is not None
    reset = api.post("/v1/admin/pools/cpu/reset", headers=admin)
    assert reset.json()["settings"]["max"] == 4 and reset.json()["edited_at"] is None


def test_a_job_record_carries_its_cost_summed_over_its_attempts(
    api: TestClient, keys: Keys, known_run: dict[str, Any]
) -> None:
    a = api.get(f"/v1/jobs/{known_run['a']}", headers=auth(keys.alice_token)).json()["cost"]
    assert a["billable_seconds"] == pytest.approx(60.0)
    assert a["cost_usd"] == pytest.approx(0.006)
    assert a["cost_per_image_usd"] == pytest.approx(0.006)
    b = api.get(f"/v1/jobs/{known_run['b']}", headers=auth(keys.alice_token)).json()["cost"]
    assert b["cost_usd"] == pytest.approx(0.002) and b["cost_per_image_usd"] == pytest.approx(0.001)


def test_usage_per_key_by_day_and_kind_matches_the_hand_computed_run(
    api: TestClient, keys: Keys, known_run: dict[str, Any]
) -> None:
    usage = api.get("/v1/usage", headers=auth(keys.alice_token)).json()
    day = datetime.fromtimestamp(known_run["t0"] + 110, UTC).date().isoformat()
    assert usage["rows"] == [
        {
            "day": day,
            "kind": "txt2img",
            "jobs": 2,
            "images": 3,
            "gpu_seconds": pytest.approx(70.0),
            "cost_usd": pytest.approx(0.008),
        }
    ]
    assert usage["cost_usd"] == pytest.approx(0.008)
    bob = api.get("/v1/usage", headers=auth(keys.bob_token)).json()
    assert bob["rows"] == [] and bob["cost_usd"] == 0


def test_fleet_usage_per_pool_matches_the_hand_computed_run(
    api: TestClient, keys: Keys, known_run: dict[str, Any]
) -> None:
    view = api.get("/v1/admin/usage", headers=auth(keys.admin_token)).json()
    rows = {(row["pool"], row["gpu"]): row for row in view["pools"]}
    cpu = rows[("cpu", "cpu")]
    assert cpu["images"] == 1 and cpu["busy_seconds"] == pytest.approx(60.0)
    assert cpu["paid_seconds"] == pytest.approx(100.0)
    assert cpu["cost_usd"] == pytest.approx(0.01)
    assert cpu["idle_share"] == pytest.approx(0.4)
    assert cpu["images_per_dollar"] == pytest.approx(100.0)
    assert cpu["seconds_per_image"] == pytest.approx(60.0)
    assert cpu["images_per_hour"] == pytest.approx(1 / 24)
    loose = rows[(None, "cpu")]
    assert loose["images"] == 2 and loose["cost_usd"] == pytest.approx(0.002)
    assert loose["images_per_dollar"] == pytest.approx(1000.0) and loose["idle_share"] == 0


def test_metrics_parse_as_prometheus_text_with_the_fleet_figures(
    api: TestClient, db: Database, settings: Settings, keys: Keys, known_run: dict[str, Any]
) -> None:
    lifecycle = JobLifecycle(db, settings)
    params = Txt2ImgParams(prompt="queued", model="demo", width=64, height=64)
    lifecycle.submit(keys.bob, Txt2ImgJob(params=params))
    lifecycle.submit(keys.bob, Txt2ImgJob(params=params))
    # A worker of a pool the file does not define (a Helm pool scaled by KEDA) still counts.
    assert claim(lifecycle, keys, "k1", "helm-pool") is not None
    response = api.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("imagefleet_queue_depth", pool="cpu", tier="paid") == 1
    assert value("imagefleet_oldest_queued_seconds", pool="cpu", tier="paid") >= 0
    assert value("imagefleet_running_jobs", pool="cpu") == 0
    assert value("imagefleet_running_jobs", pool="helm-pool") == 1
    assert value("imagefleet_jobs_finished_total", kind="txt2img", outcome="succeeded") == 2
    assert value("imagefleet_billable_seconds_total", pool="cpu", gpu="cpu") == pytest.approx(60)
    assert value("imagefleet_cost_usd_total", pool="cpu", gpu="cpu") == pytest.approx(0.006)
    assert value("imagefleet_cost_usd_total", pool="", gpu="cpu") == pytest.approx(0.002)
    # s/image: A's 40 s (1 image) and B's 5 s twice; the failed attempt delivered none.
    assert value("imagefleet_seconds_per_image_count", gpu="cpu") == 3
    assert value("imagefleet_seconds_per_image_sum", gpu="cpu") == pytest.approx(50)
    assert value("imagefleet_seconds_per_image_bucket", gpu="cpu", le="8.0") == 2
    assert value("imagefleet_webhook_backlog") == 0
    assert value("imagefleet_model_attempts_total", model="demo", pool="cpu") == 2
    assert value("imagefleet_model_cache_total", pool="cpu", result="miss") == 2
    assert value("imagefleet_workers", pool="cpu", state="idle") >= 0


def test_the_cli_tables_print_the_same_figures(
    api: TestClient, keys: Keys, known_run: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from imagefleet.cli.pools import POOL_HEADERS, pool_rows, print_fleet_usage, print_key_usage
    from imagefleet.cli.tables import print_table
    from imagefleet.scaling.wire import FleetUsageView, KeyUsageView, PoolView

    usage = api.get("/v1/usage", headers=auth(keys.alice_token)).json()
    print_key_usage(KeyUsageView.model_validate(usage))
    fleet = api.get("/v1/admin/usage", headers=auth(keys.admin_token)).json()
    print_fleet_usage(FleetUsageView.model_validate(fleet))
    pools = api.get("/v1/admin/pools", headers=auth(keys.admin_token)).json()
    print_table(POOL_HEADERS, pool_rows([PoolView.model_validate(p) for p in pools]), empty="")
    lines = capsys.readouterr().out.splitlines()
    assert any(line.split()[:6] == ["total", "2", "3", "70.0", "0.0080"] for line in lines), lines
    cpu = next(line.split() for line in lines if line.startswith("cpu ") and "%" in line)
    assert cpu == ["cpu", "cpu", "1", "0.0", "60.00", "100", "40%", "0.0100"]
    assert any(line.split()[:5] == ["cpu", "command", "cpu", "0.36", "0..4"] for line in lines)


def test_a_pool_dropped_from_the_file_is_removed_at_the_next_start(
    settings: Settings, keys: Keys, model: Model
) -> None:
    with TestClient(create_app(settings, run_duties=False)) as client:
        assert [
            p["name"] for p in client.get("/v1/admin/pools", headers=auth(keys.admin_token)).json()
        ] == ["cpu"]
    assert settings.pools_file is not None
    settings.pools_file.write_text(POOLS.replace("[pools.cpu", "[pools.gpu"))
    with TestClient(create_app(settings, run_duties=False)) as client:
        names = [
            p["name"] for p in client.get("/v1/admin/pools", headers=auth(keys.admin_token)).json()
        ]
    assert names == ["gpu"]
