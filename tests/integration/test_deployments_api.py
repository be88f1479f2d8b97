"""Deployments over the HTTP API: versions are immutable packages named by their sha256,
aliases move in one call each way, runs are checked against the version's schema at submit,
every bad package is a clear 4xx that leaves nothing behind, and tenancy holds."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from imagefleet.config import Settings
from imagefleet.deployments import pack
from imagefleet.orchestrator.app import create_app
from imagefleet.store.database import Database
from imagefleet.store.keys import create_key
from imagefleet.store.models import Model
from tests.comfy_graphs import txt2img
from tests.conftest import Keys
from tests.deploy_packages import graph_package, python_package
from tests.integration.test_kinds_api import auth

# The store's queries are dialect-neutral Core; SQLite keeps this module quick.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@dataclass
class Deployers:
    carol: str  # a deploy key
    dave: str  # another tenant's deploy key


@pytest.fixture
def api(settings: Settings, keys: Keys, model: Model) -> Iterator[TestClient]:
    with TestClient(create_app(settings, run_duties=False)) as client:
        yield client


@pytest.fixture
def deployers(db: Database) -> Deployers:
    with db.write() as conn:
        _, carol = create_key(conn, name="carol", scope="deploy", tier="free", now=1.0)
        _, dave = create_key(conn, name="dave", scope="deploy", tier="free", now=1.0)
    return Deployers(carol, dave)


def deploy(api: TestClient, token: str, name: str, data: bytes, **query: Any) -> Any:
    return api.put(
        f"/v1/deployments/{name}/versions",
        content=data,
        params=query,
        headers={**auth(token), "Content-Type": "application/gzip"},
    )


def run(api: TestClient, token: str, name: str, **body: Any) -> Any:
    return api.post(f"/v1/deployments/{name}/runs", json=body, headers=auth(token))


def tar(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for info, data in members:
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_versions_are_immutable_and_aliases_promote_and_roll_back_in_one_call(
    api: TestClient, deployers: Deployers, tmp_path: Path
) -> None:
    v1 = pack(python_package(tmp_path / "v1", "v1"))
    assert pack(python_package(tmp_path / "v1-again", "v1")) == v1  # deterministic
    first = deploy(api, deployers.carol, "stylize", v1, alias="staging")
    assert first.status_code == 201, first.text
    again = deploy(api, deployers.carol, "stylize", v1)
    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["version"]["version"] == first.json()["version"]["version"]
    second = deploy(api, deployers.carol, "stylize", pack(python_package(tmp_path / "v2", "v2")))
    assert second.status_code == 201 and second.json()["version"]["number"] == 2
    one, two = first.json()["version"]["version"], second.json()["version"]["version"]
    aliases = {a["alias"]: a["version"] for a in second.json()["aliases"]}
    assert aliases == {"latest": two, "staging": one}

    # No production alias yet: runs use latest.
    job = run(api, deployers.carol, "stylize", inputs={"color": "red"})
    assert job.status_code == 201, job.text
    assert (job.json()["kind"], job.json()["params"]["version"]) == ("workflow", two)
    promoted = api.post(
        "/v1/deployments/stylize/aliases/production",
        json={"version": "v1"},
        headers=auth(deployers.carol),
    )
    assert promoted.status_code == 200, promoted.text
    assert (
        run(api, deployers.carol, "stylize", inputs={"color": "red"}).json()["params"]["version"]
        == one
    )
    api.post(
        "/v1/deployments/stylize/aliases/production",
        json={"version": two[:12]},
        headers=auth(deployers.carol),
    )
    after = run(api, deployers.carol, "stylize", inputs={"color": "red"}).json()
    assert after["params"]["version"] == two
    rolled = api.post(
        "/v1/deployments/stylize/aliases/production/rollback", headers=auth(deployers.carol)
    )
    assert rolled.status_code == 200, rolled.text
    production = next(a for a in rolled.json()["aliases"] if a["alias"] == "production")
    assert (production["version"], production["number"]) == (one, 1)
    pinned = run(api, deployers.carol, "stylize", inputs={"color": "blue"}, alias="staging")
    assert pinned.json()["params"]["version"] == one
    by_job = api.post(
        "/v1/jobs",
        json={"kind": "workflow", "params": {"deployment": "stylize", "inputs": {"color": "red"}}},
        headers=auth(deployers.carol),
    )
    assert by_job.status_code == 201 and by_job.json()["params"]["version"] == one
    listed = api.get("/v1/deployments", headers=auth(deployers.carol)).json()
    assert [(d["name"], len(d["versions"])) for d in listed] == [("stylize", 2)]


def test_run_inputs_are_checked_against_the_schema_naming_the_field(
    api: TestClient, deployers: Deployers, tmp_path: Path
) -> None:
    deploy(api, deployers.carol, "stylize", pack(python_package(tmp_path / "p")))
    wrong = run(api, deployers.carol, "stylize", inputs={"color": "purple"})
    assert wrong.status_code == 422
    error = wrong.json()["detail"][0]
    assert error["loc"] == ["body", "params", "inputs", "color"] and "purple" in error["msg"]
    missing = run(api, deployers.carol, "stylize", inputs={"size": 16})
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"][-1] == "color"
    unknown_alias = run(api, deployers.carol, "stylize", inputs={"color": "red"}, alias="canary")
    assert unknown_alias.status_code == 404 and "canary" in unknown_alias.text
    unknown_version = run(api, deployers.carol, "stylize", inputs={"color": "red"}, version="v9")
    assert unknown_version.status_code == 404 and "v9" in unknown_version.text
    rollback = api.post(
        "/v1/deployments/stylize/aliases/latest/rollback", headers=auth(deployers.carol)
    )
    assert rollback.status_code == 409 and "nothing to roll back" in rollback.text


def test_bad_packages_are_clear_4xx_and_leave_nothing_deployed(
    api: TestClient, deployers: Deployers, keys: Keys, tmp_path: Path
) -> None:
    good = pack(python_package(tmp_path / "good"))
    refused = deploy(api, keys.alice_token, "mine", good)
    assert refused.status_code == 403 and "--scope deploy" in refused.text

    no_run = python_package(tmp_path / "norun", pipeline="def setup(models):\n    pass\n")
    bad_schema = python_package(tmp_path / "schema", schema={"type": "object", "required": 3})
    ui_graph = graph_package(tmp_path / "ui", {"nodes": [], "links": [], "version": 0.4})
    bad_node = txt2img("demo")
    bad_node["8"]["inputs"]["samples"] = ["42", 0]
    broken_graph = graph_package(tmp_path / "broken", bad_node)
    unknown_model = python_package(tmp_path / "model", models={"checkpoint": "no-such-model"})
    cases = [
        (pack(no_run), 422, "no top-level run"),
        (pack(bad_schema), 422, "not a valid JSON Schema"),
        (pack(ui_graph), 422, "Save (API)"),
        (pack(broken_graph), 422, "links to node 42"),
        (pack(unknown_model), 404, "no-such-model"),
        (b"not a tarball", 422, "not a readable tar.gz"),
        (tar((tarfile.TarInfo("../evil.py"), b"x")), 422, "path traversal"),
        (tar((tarfile.TarInfo("/etc/evil.py"), b"x")), 422, "absolute path"),
    ]
    link = tarfile.TarInfo("pipeline.py")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    cases.append((tar((link, b"")), 422, "is a link"))
    for data, status, text in cases:
        response = deploy(api, deployers.carol, "bad", data)
        assert (response.status_code, text in response.text) == (status, True), response.text
    api.app.state.settings.max_package_bytes = 100  # type: ignore[attr-defined]
    too_big = deploy(api, deployers.carol, "bad", good)
    assert too_big.status_code == 413 and "IMAGEFLEET_MAX_PACKAGE_BYTES" in too_big.text
    api.app.state.settings.max_package_bytes = 20 << 20  # type: ignore[attr-defined]
    assert api.get("/v1/deployments", headers=auth(deployers.carol)).json() == []

    assert deploy(api, deployers.carol, "taken", good).status_code == 201
    clash = deploy(api, deployers.dave, "taken", good)
    assert clash.status_code == 409 and "another --name" in clash.text


def test_private_deployments_are_404_to_others_and_public_runs_belong_to_the_caller(
    api: TestClient, deployers: Deployers, keys: Keys, tmp_path: Path
) -> None:
    data = pack(python_package(tmp_path / "p"))
    deploy(api, deployers.carol, "secret", data)
    assert api.get("/v1/deployments/secret", headers=auth(keys.bob_token)).status_code == 404
    hidden = run(api, keys.bob_token, "secret", inputs={"color": "red"})
    assert hidden.status_code == 404 and "no deployment 'secret'" in hidden.text
    moved = api.post(
        "/v1/deployments/secret/aliases/production",
        json={"version": "v1"},
        headers=auth(keys.bob_token),
    )
    assert moved.status_code == 404

    deploy(api, deployers.carol, "shared", data, public="true")
    listed = api.get("/v1/deployments", headers=auth(keys.bob_token)).json()
    assert [(d["name"], d["owned"]) for d in listed] == [("shared", False)]
    job = run(api, keys.bob_token, "shared", inputs={"color": "green"})
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]
    assert api.get(f"/v1/jobs/{job_id}", headers=auth(keys.bob_token)).status_code == 200
    assert api.get(f"/v1/jobs/{job_id}", headers=auth(deployers.carol)).status_code == 404
    not_owner = api.post(
        "/v1/deployments/shared/aliases/production",
        json={"version": "v1"},
        headers=auth(keys.bob_token),
    )
    assert not_owner.status_code == 403 and "only the owner" in not_owner.text


def test_a_graph_deployment_runs_as_a_comfy_job_with_its_inputs_injected(
    api: TestClient, deployers: Deployers, tmp_path: Path
) -> None:
    response = deploy(api, deployers.carol, "cats", pack(graph_package(tmp_path / "g")))
    assert response.status_code == 201, response.text
    job = run(api, deployers.carol, "cats", inputs={"prompt": "a red cat", "seed": 7})
    assert job.status_code == 201, job.text
    graph = job.json()["params"]["graph"]
    assert job.json()["kind"] == "comfy"
    assert (graph["6"]["inputs"]["text"], graph["3"]["inputs"]["seed"]) == ("a red cat", 7)
    assert [m["name"] for m in job.json()["models"]] == ["demo"]
    bad = run(api, deployers.carol, "cats", inputs={"prompt": ""})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "prompt"
