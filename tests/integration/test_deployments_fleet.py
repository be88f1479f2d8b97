"""Deployments through the fleet, in process: a real orchestrator over HTTP and one real
worker. Python pipelines run in a warm subprocess per version that never sees the worker's
secrets; promotion and rollback move runs between warm versions; extra requirements are
installed once into their own venv (from a wheel the test builds, no network) and only when
the worker allows installs; a failing setup is a final error naming the version; a graph
deployment runs with its inputs injected."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from imagefleet.api_views import JobView
from imagefleet.cli import app as cli
from imagefleet.client import ImageFleetClient
from imagefleet.config import Settings
from imagefleet.deployments.client import Deployments
from imagefleet.models.registry import Registration, register
from imagefleet.orchestrator.app import create_app
from imagefleet.protocol import JobStatus
from imagefleet.store.database import Database
from imagefleet.store.keys import create_key
from imagefleet.worker.engines.diffusers_engine import DiffusersEngine
from imagefleet.worker.handlers.workflow import HANDLER
from imagefleet.worker.loop import Worker, WorkerConfig
from tests.deploy_packages import graph_package, python_package, wheel
from tests.harness.servers import serving

pytestmark = [pytest.mark.usefixtures("one_cpu_thread"), pytest.mark.timeout(300)]


@dataclass
class Fleet:
    deployer: Deployments
    deployer_client: ImageFleetClient
    worker: Worker
    url: str
    deployer_token: str
    client_token: str


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path) -> Iterator[Fleet]:
    """One orchestrator and one worker for the module (a worker's start is the slow part)."""
    with pytest.MonkeyPatch.context() as env:
        # Secrets in the worker's environment that deployment code must not see.
        env.setenv("IMAGEFLEET_WORKER_KEY", "if_worker_secret")
        env.setenv("MY_SERVICE_SECRET", "hunter2")
        env.delenv("IMAGEFLEET_WORKER_ALLOW_DEPLOY_INSTALLS", raising=False)
        env.setenv("IMAGEFLEET_WORKER_DEPLOY_PREWARM", "json")  # a spare, without torch's cost
        env.setenv("IMAGEFLEET_WORKER_DEPLOY_PREWARM_AT_START", "1")
        yield from _fleet(tmp_path_factory.mktemp("fleet"), demo_dir)


def _fleet(tmp_path: Path, demo_dir: Path) -> Iterator[Fleet]:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'fleet.db'}",
        lease_seconds=30,
        retry_backoff_seconds=0,
    )
    db = Database(settings.database_url)
    db.upgrade()
    register(db, Registration("demo", str(demo_dir)))
    with db.write() as conn:
        _, deployer = create_key(conn, name="d", scope="deploy", tier="free", now=1.0)
        _, worker_token = create_key(conn, name="w", scope="worker", tier="free", now=1.0)
        _, client_token = create_key(conn, name="c", scope="client", tier="free", now=1.0)
    with serving(create_app(settings, run_duties=False)) as url:
        config = WorkerConfig(
            orchestrator_url=url,
            key=worker_token,
            cache_dir=tmp_path / "cache",
            node_id="a",
            worker_id="worker-a",
            device="cpu",
            claim_wait_seconds=1.0,
        )
        worker = Worker(config, DiffusersEngine("cpu"))  # a torch engine: comfy runs too
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        client = ImageFleetClient(url, deployer)
        try:
            yield Fleet(Deployments(client), client, worker, url, deployer, client_token)
        finally:
            worker.request_stop()
            thread.join(timeout=30)
            HANDLER.close()
            client.close()
    db.dispose()


def finished(fleet: Fleet, job: JobView) -> JobView:
    return fleet.deployer_client.wait(job.id, timeout=120)


def report(fleet: Fleet, job: JobView) -> dict[str, object]:
    done = finished(fleet, job)
    assert done.status is JobStatus.succeeded, done.error
    result: dict[str, object] = json.loads(fleet.deployer_client.download(job.id, 1))
    return result


def test_python_versions_run_warm_promote_roll_back_and_never_see_worker_secrets(
    fleet: Fleet, tmp_path: Path
) -> None:
    api = fleet.deployer
    v1 = api.deploy(python_package(tmp_path / "v1", "v1", models={"checkpoint": "demo"}), "paint")
    api.promote("paint", "production", "v1")
    job = api.run("paint", {"color": "red", "size": 24}, seed=5)
    first = report(fleet, job)
    assert first["version"] == "v1" and first["setups"] == 1 and first["seed"] == 5
    assert first["models"] == {"checkpoint": True} and first["secrets_seen"] == []
    image = Image.open(io.BytesIO(fleet.deployer_client.download(job.id, 0)))
    assert (image.size, image.getpixel((0, 0))) == ((24, 24), (255, 0, 0))
    warm = job.combo_key
    assert warm and warm in fleet.worker._claim_request().resident_combos

    again = report(fleet, api.run("paint", {"color": "blue"}))
    assert (again["pid"], again["setups"]) == (first["pid"], 1)  # the same warm process

    v2 = api.deploy(python_package(tmp_path / "v2", "v2", models={"checkpoint": "demo"}), "paint")
    api.promote("paint", "production", v2.version.version)
    promoted = report(fleet, api.run("paint", {"color": "green"}))
    assert promoted["version"] == "v2" and promoted["pid"] != first["pid"]
    shown = api.rollback("paint", "production")
    production = next(a for a in shown.aliases if a.alias == "production")
    assert production.version == v1.version.version
    rolled_back = report(fleet, api.run("paint", {"color": "green"}))
    assert (rolled_back["version"], rolled_back["pid"]) == ("v1", first["pid"])

    failing = python_package(
        tmp_path / "broken",
        pipeline="def setup(models):\n    raise RuntimeError('no GPU')\n\n"
        "def run(inputs, context):\n    return []\n",
    )
    broken = api.deploy(failing, "broken")
    done = finished(fleet, api.run("broken", {"color": "red"}))
    assert done.status is JobStatus.failed and done.error is not None
    assert "setup failed" in done.error.message and "RuntimeError: no GPU" in done.error.message
    assert broken.version.version[:12] in done.error.message


def test_requirements_install_once_into_their_own_env_only_where_allowed(
    fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = fleet.deployer
    extra = "__import__('tinyhelper').VALUE"
    needs = python_package(tmp_path / "needs", "n1", requirements=["tinyhelper==0.1"], extra=extra)
    wheel(needs / "wheels")
    api.deploy(needs, "helper")
    refused = finished(fleet, api.run("helper", {"color": "red"}))
    assert refused.status is JobStatus.failed and refused.error is not None
    assert "IMAGEFLEET_WORKER_ALLOW_DEPLOY_INSTALLS=1" in refused.error.message

    monkeypatch.setenv("IMAGEFLEET_WORKER_ALLOW_DEPLOY_INSTALLS", "1")
    built_before = HANDLER.envs_built
    assert report(fleet, api.run("helper", {"color": "red"}))["extra"] == "0.1"
    # Another version with the same requirements reuses the env.
    same_needs = python_package(
        tmp_path / "needs2", "n2", requirements=["tinyhelper==0.1"], extra=extra
    )
    wheel(same_needs / "wheels")
    api.deploy(same_needs, "helper")
    second = report(fleet, api.run("helper", {"color": "blue"}))
    assert (second["version"], second["extra"]) == ("n2", "0.1")
    assert HANDLER.envs_built == built_before + 1


def test_a_graph_deployment_runs_on_the_worker_with_its_inputs_injected(
    fleet: Fleet, tmp_path: Path
) -> None:
    api = fleet.deployer
    api.deploy(graph_package(tmp_path / "graph"), "cats")
    job = api.run("cats", {"prompt": "a blue cat", "seed": 3})
    done = finished(fleet, job)
    assert done.status is JobStatus.succeeded, done.error
    assert done.kind == "comfy" and done.params["graph"]["3"]["inputs"]["seed"] == 3
    image = Image.open(io.BytesIO(fleet.deployer_client.download(job.id, 0)))
    assert (
        image.size == (64, 64)
        and json.loads(image.text["prompt"])["6"]["inputs"]["text"] == "a blue cat"
    )


def test_the_cli_deploys_promotes_rolls_back_and_runs(fleet: Fleet, tmp_path: Path) -> None:
    runner = CliRunner()

    def imagefleet(*args: str, token: str = fleet.deployer_token) -> str:
        result = runner.invoke(cli, [*args, "--url", fleet.url, "--key", token])
        assert result.exit_code == 0, result.output
        return result.output

    first = python_package(tmp_path / "one", "c1")
    assert "deployed clipaint v1 (new version)" in imagefleet(
        "deploy", str(first), "--name", "clipaint", "--alias", "staging"
    )
    assert "unchanged" in imagefleet("deploy", str(first), "--name", "clipaint")
    imagefleet("deploy", str(python_package(tmp_path / "two", "c2")), "--name", "clipaint")
    imagefleet("deployments", "promote", "clipaint", "production", "v1")
    imagefleet("deployments", "promote", "clipaint", "production", "v2")
    shown = imagefleet("deployments", "rollback", "clipaint", "production")
    assert [line.split()[0] for line in shown.splitlines() if "production" in line] == ["v1"]
    assert "clipaint  2 versions  private" in imagefleet("deployments", "list")
    ran = imagefleet(
        "deployments", "run", "clipaint", "--inputs", '{"color": "red"}', "-o", str(tmp_path / "o")
    )
    assert json.loads((tmp_path / "o").glob("*.json").__next__().read_text())["version"] == "c1"
    assert ran.count(str(tmp_path / "o")) == 2
    refused = runner.invoke(
        cli, ["deploy", str(first), "--name", "x", "--url", fleet.url, "--key", fleet.client_token]
    )
    assert refused.exit_code == 1 and "--scope deploy" in refused.output


SPINS_UNTIL_CANCELLED = """
import time


def run(inputs, context):
    step = 0
    while not context.cancelled():  # never ends on its own: only a cancel frees the worker
        step += 1
        context.progress(step, step + 1)
        time.sleep(0.05)
    return []
"""


def test_a_cancelled_run_stops_through_context_cancelled_and_frees_the_worker(
    fleet: Fleet, tmp_path: Path
) -> None:
    api, client = fleet.deployer, fleet.deployer_client
    api.deploy(python_package(tmp_path / "spin", pipeline=SPINS_UNTIL_CANCELLED), "spin")
    job = api.run("spin", {"color": "red"})
    while (view := client.get(job.id)).progress.step == 0:
        assert not view.status.is_final, view.error
        time.sleep(0.1)
    assert client.cancel(job.id).status is JobStatus.cancelled
    after = python_package(tmp_path / "after", "after")
    api.deploy(after, "after")
    assert report(fleet, api.run("after", {"color": "red"}))["version"] == "after"
