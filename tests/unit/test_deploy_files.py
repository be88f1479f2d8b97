"""The deployment files parse, follow their specifications, and their checks catch mistakes.

The full validation (hadolint, `helm lint`, the Kubernetes schemas) runs in scripts/validate-deploy;
these are the fast parts, plus the checks' own behaviour on files with known mistakes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.unit.deploy_support import ROOT, load

validate = load("deploy/validate.py")


def test_every_yaml_file_under_deploy_parses() -> None:
    files = [
        path
        for path in (ROOT / "deploy").rglob("*.y*ml")
        if "templates" not in path.parts  # Helm templates are Go templates, not YAML
    ]
    assert len(files) >= 4
    for path in files:
        assert yaml.safe_load(path.read_text()) is not None, path


def test_the_compose_file_follows_the_compose_spec_and_its_references_resolve() -> None:
    assert validate.compose_problems() == []
    services = validate.load_compose()["services"]
    assert {"orchestrator-a", "orchestrator-b", "proxy", "postgres", "seaweedfs"} <= set(services)
    assert services["worker-gpu"]["profiles"] == ["gpu"]


def test_compose_variables_take_their_defaults_or_the_given_values() -> None:
    assert validate.interpolate("${PORT:-8080}:${HOST}/$$x", {}) == "8080:/$x"
    assert validate.interpolate({"a": ["${PORT:-8080}"]}, {"PORT": "9"}) == {"a": ["9"]}


def test_compose_mistakes_are_reported(tmp_path: Path) -> None:
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(
        "services:\n"
        "  web:\n"
        "    image: caddy:latest\n"
        "    depends_on: [db]\n"
        "    volumes: [cache:/cache, ./missing.conf:/etc/x.conf]\n"
        "    environment: {IMAGEFLEET_URL: http://x}\n"
        "  api:\n"
        "    build: {context: ., dockerfile: nope.Dockerfile}\n"
        "    environment: {IMAGEFLEET_LEASE_SECOND: '30'}\n"
    )
    problems = validate.compose_problems(compose)
    assert any("depends on unknown service 'db'" in p for p in problems)
    assert any("undeclared volume 'cache'" in p for p in problems)
    assert any("missing.conf, which does not exist" in p for p in problems)
    assert any("'caddy:latest' is not pinned" in p for p in problems)
    assert any("nope.Dockerfile, which does not exist" in p for p in problems)
    assert any("IMAGEFLEET_LEASE_SECOND is read by nothing" in p for p in problems)
    assert not any("IMAGEFLEET_URL" in p for p in problems)


def test_unknown_compose_keys_fail_the_compose_spec(tmp_path: Path) -> None:
    compose = tmp_path / "docker-compose.yml"
    compose.write_text("services:\n  web:\n    image: caddy:2.10.2\n    enviroment: {A: b}\n")
    assert any("enviroment" in p for p in validate.compose_problems(compose))


def test_dockerfile_bases_are_pinned_and_unpinned_ones_are_reported(tmp_path: Path) -> None:
    assert validate.all_dockerfile_problems() == []
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("ARG BASE=python:latest\nFROM ${BASE} AS build\nFROM build\nFROM debian\n")
    validate.ROOT = tmp_path.parent  # problems name files relative to the repository root
    try:
        problems = validate.dockerfile_problems(bad)
    finally:
        validate.ROOT = ROOT
    assert problems == [
        "bad.Dockerfile: base image 'python:latest' is not pinned to an exact tag",
        "bad.Dockerfile: base image 'debian' is not pinned to an exact tag",
    ]


@pytest.mark.parametrize("values", validate.chart_values_files(), ids=lambda p: p.name)
def test_the_chart_renders_and_its_scaled_objects_match_keda(values: Path) -> None:
    documents = validate.render_chart(values)
    kinds = {doc["kind"] for doc in documents}
    assert {"Deployment", "Service", "ConfigMap"} <= kinds
    for doc in documents:
        if doc["kind"] == "ScaledObject":
            assert validate.keda_problems(doc) == []


def test_keda_fields_that_keda_does_not_know_are_reported() -> None:
    documents = validate.render_chart(validate.CHART / "ci" / "full-values.yaml")
    scaled = next(doc for doc in documents if doc["kind"] == "ScaledObject")
    scaled["spec"]["pollingIntervall"] = 15
    scaled["spec"]["triggers"][0]["metdata"] = {}
    assert set(validate.keda_problems(scaled)) == {
        "unknown field spec.pollingIntervall",
        "unknown field spec.triggers[0].metdata",
    }


def test_keda_owns_the_replica_count_of_the_pools_it_scales() -> None:
    documents = validate.render_chart(validate.CHART / "ci" / "full-values.yaml")
    workers = [
        d for d in documents if d["kind"] == "Deployment" and "worker" in d["metadata"]["name"]
    ]
    scaled = {
        d["spec"]["scaleTargetRef"]["name"]: d for d in documents if d["kind"] == "ScaledObject"
    }
    assert {w["metadata"]["name"] for w in workers} == set(scaled)
    assert all("replicas" not in w["spec"] for w in workers)
    query = scaled["fleet-imagefleet-worker-a100"]["spec"]["triggers"][0]["metadata"]["query"]
    assert 'imagefleet_queue_depth{pool="a100"}' in query
    assert 'imagefleet_running_jobs{pool="a100"}' in query
    assert scaled["fleet-imagefleet-worker-rtx4090"]["spec"]["maxReplicaCount"] == 40


BASE_VALUES = {"secrets": {"databaseUrl": "postgresql://db/x"}, "s3": {"bucket": "fleet"}}


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"s3": {"bucket": ""}}, "needs an S3-compatible artifact store"),
        ({"secrets": {"databaseUrl": ""}}, "set secrets.databaseUrl"),
        ({"keda": {"enabled": True}}, "needs keda.prometheusServerAddress"),
        ({"workerPools": [{"name": "a"}, {"name": "a"}]}, 'pool name "a" is used twice'),
        ({"workerPools": [{"name": "A_100"}]}, "must be lower-case letters"),
        ({"workerPools": [{"name": "a", "cache": {"type": "nfs"}}]}, "must be emptyDir, hostPath"),
    ],
)
def test_the_chart_refuses_unsafe_or_invalid_values_with_the_reason(
    values: dict[str, object], reason: str
) -> None:
    import helm_python as helm  # loads Helm's Go library into this process: only when needed

    merged = {
        key: {**BASE_VALUES.get(key, {}), **value} if isinstance(value, dict) else value
        for key, value in values.items()
    }
    with (
        helm.Chart.load(str(validate.CHART)) as chart,
        pytest.raises(helm.HelmError, match=re.escape(reason)),
    ):
        chart.render({**BASE_VALUES, **merged}, name="fleet")


def test_workers_never_receive_the_orchestrators_secrets() -> None:
    documents = validate.render_chart(validate.CHART / "ci" / "full-values.yaml")
    for doc in documents:
        if doc["kind"] == "Deployment" and "-worker-" in doc["metadata"]["name"]:
            container = doc["spec"]["template"]["spec"]["containers"][0]
            assert "envFrom" not in container
            refs = [
                e["valueFrom"]["secretKeyRef"]["name"]
                for e in container["env"]
                if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
            ]
            assert refs == ["fleet-imagefleet-worker-key"]


def test_image_pins_cover_pyprojects_dependencies_and_satisfy_them() -> None:
    import tomllib

    from packaging.requirements import Requirement

    pins = load("deploy/docker/pin_requirements.py")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for image, extras in pins.IMAGES.items():
        lines = (ROOT / "deploy/docker/requirements" / f"{image}.txt").read_text().splitlines()
        pinned = {
            Requirement(line).name.lower(): Requirement(line)
            for line in lines
            if line and not line.startswith("#")
        }
        wanted = [
            r
            for r in pins.image_requirements(pyproject, extras)
            if r.name not in pins.SEPARATELY_PINNED
        ]
        assert {r.name.lower() for r in wanted} == set(pinned), image
        for requirement in wanted:
            (version,) = [s.version for s in pinned[requirement.name.lower()].specifier]
            assert requirement.specifier.contains(version), (image, requirement, version)


def test_worker_images_pin_the_torch_the_tests_run_on() -> None:
    from importlib import metadata

    tested = metadata.version("torch").split("+")[0]
    for name in ("worker-cuda.Dockerfile", "worker-cpu.Dockerfile"):
        text = (ROOT / "deploy/docker" / name).read_text()
        assert re.search(rf"^ARG TORCH_VERSION={re.escape(tested)}$", text, re.M), name


def test_hadolint_findings_are_reported(tmp_path: Path) -> None:
    dockerfile = tmp_path / "bad.Dockerfile"
    dockerfile.write_text("FROM debian:12.8\nRUN apt-get update && apt-get install -y curl\n")
    problems = validate.hadolint_problems([dockerfile])
    assert any("DL3008" in p for p in problems)  # unpinned apt package
    assert any("DL3015" in p for p in problems)  # --no-install-recommends missing


def deployment(replicas: object = 1, **container: object) -> dict[str, object]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "i:1", **container}]},
            },
        },
    }


def test_manifests_with_unknown_or_mistyped_fields_fail_the_kubernetes_schemas() -> None:
    assert validate.manifest_problems([deployment()], "test") == []
    (mistyped, _) = validate.manifest_problems([deployment(replicas="two")], "test")
    assert "Deployment x (Kubernetes 1.27.0): spec.replicas" in mistyped
    (unknown, _) = validate.manifest_problems([deployment(cpu=1)], "test")
    assert "'cpu' was unexpected" in unknown


def test_gpu_pools_request_their_gpus_and_cpu_pools_none() -> None:
    documents = validate.render_chart(validate.CHART / "ci" / "cpu-pool-values.yaml")
    containers = {
        doc["metadata"]["name"]: doc["spec"]["template"]["spec"]["containers"][0]
        for doc in documents
        if doc["kind"] == "Deployment" and "-worker-" in doc["metadata"]["name"]
    }
    assert containers["fleet-imagefleet-worker-gpu"]["resources"] == {
        "limits": {"nvidia.com/gpu": 1}
    }
    assert "resources" not in containers["fleet-imagefleet-worker-cpu"]
    assert containers["fleet-imagefleet-worker-cpu"]["image"] == "imagefleet/worker:0.1.0-cpu"
