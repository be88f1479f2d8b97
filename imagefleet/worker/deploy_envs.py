"""Where a Python deployment's code and extra requirements live on a worker's disk, under
the model cache's root (`.deployments/`, which the cache ignores):

    packages/<sha256>/   the extracted package, verified against its sha256 first
    envs/<key>/          a venv per set of requirements: key = sha256 of the sorted
                         requirements and of the wheels the package vendors in `wheels/`

Both are made once under a file lock, in a temporary directory renamed into place, so two
workers on one node never half-see one, and reused by every later job. Installing runs code
from the package index (or the package's vendored wheels), so it is off unless the operator
allows it: IMAGEFLEET_WORKER_ALLOW_DEPLOY_INSTALLS=1 (extra pip options, e.g. an index URL,
in IMAGEFLEET_WORKER_DEPLOY_PIP_ARGS).

A venv made from the worker's interpreter with `--system-site-packages` sees the base
interpreter's packages, not those of a venv the worker itself runs in; a `.pth` file adds the
worker's own site directories after the env's, so torch and diffusers stay visible while the
deployment's pins win.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import site
import subprocess
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from imagefleet.deployments.package import extract
from imagefleet.worker.file_locks import FileLock

WHEELS_DIR = "wheels"
READY = ".ready"
INSTALL_TIMEOUT_SECONDS = 600


class DeploySettings(BaseSettings):
    """IMAGEFLEET_WORKER_ALLOW_DEPLOY_INSTALLS, _DEPLOY_PIP_ARGS, _WARM_DEPLOYMENTS (processes
    kept warm), _DEPLOY_PREWARM (modules a spare process imports ahead; empty: no spare) and
    _DEPLOY_PREWARM_AT_START (keep a spare from the first claim, not only once the worker has
    run a deployment: it costs a process with torch imported on every worker)."""

    model_config = SettingsConfigDict(env_prefix="IMAGEFLEET_WORKER_", extra="ignore")

    allow_deploy_installs: bool = False
    deploy_pip_args: str = ""
    warm_deployments: int = 2
    deploy_prewarm: str = "torch,diffusers:StableDiffusionPipeline"
    deploy_prewarm_at_start: bool = False


class InstallsRefused(RuntimeError):
    """The version needs requirements and this worker does not install packages."""


class InstallFailed(RuntimeError):
    """pip could not install the version's requirements."""


def package_dir(root: Path, sha256: str, data: bytes) -> Path:
    """The extracted package (made from `data`, already verified, if not there yet)."""
    target = root / "packages" / sha256
    if (target / READY).exists():
        return target
    lock = FileLock(root / "locks" / f"package-{sha256}.lock")
    lock.acquire(exclusive=True)
    try:
        if not (target / READY).exists():
            building = root / "packages" / f".{sha256}.partial"
            shutil.rmtree(building, ignore_errors=True)
            extract(data, building)
            (building / READY).touch()
            shutil.rmtree(target, ignore_errors=True)
            building.rename(target)
    finally:
        lock.release()
    return target


def env_key(requirements: Sequence[str], package: Path) -> str:
    wheels = package / WHEELS_DIR
    vendored = {
        wheel.name: hashlib.sha256(wheel.read_bytes()).hexdigest()
        for wheel in sorted(wheels.glob("*.whl"))
    }
    canonical = json.dumps({"requirements": sorted(requirements), "wheels": vendored})
    return hashlib.sha256(canonical.encode()).hexdigest()


def env_python(
    root: Path, requirements: Sequence[str], package: Path, settings: DeploySettings
) -> tuple[str, bool]:
    """The interpreter for this version, and whether its env was made just now. No
    requirements: the worker's own interpreter."""
    if not requirements:
        return sys.executable, False
    key = env_key(requirements, package)
    target = root / "envs" / key
    python = target / "bin" / "python"
    if (target / READY).exists():
        return str(python), False
    if not settings.allow_deploy_installs:
        raise InstallsRefused(
            f"the deployment needs requirements ({', '.join(requirements)}) and this worker "
            "does not install packages; its operator may allow it with "
            "IMAGEFLEET_WORKER_ALLOW_DEPLOY_INSTALLS=1"
        )
    lock = FileLock(root / "locks" / f"env-{key}.lock")
    lock.acquire(exclusive=True)
    try:
        if (target / READY).exists():
            return str(python), False
        _build(target, requirements, package, settings)
    finally:
        lock.release()
    return str(python), True


def _build(
    target: Path, requirements: Sequence[str], package: Path, settings: DeploySettings
) -> None:
    building = target.with_name(f".{target.name}.partial")
    shutil.rmtree(building, ignore_errors=True)
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(building)])
    purelib = Path(
        sysconfig.get_path("purelib", vars={"base": str(building), "platbase": str(building)})
    )
    parents = [p for p in dict.fromkeys([*site.getsitepackages(), sysconfig.get_path("purelib")])]
    (purelib / "_imagefleet_worker_site.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in parents)
    )
    wheels = package / WHEELS_DIR
    local = ["--no-index", "--find-links", str(wheels)] if wheels.is_dir() else []
    pip = [sys.executable, "-m", "pip", "--python", str(building / "bin" / "python")]
    _run(
        [
            *pip,
            "install",
            "--no-input",
            "--disable-pip-version-check",
            *local,
            *shlex.split(settings.deploy_pip_args),
            *requirements,
        ]
    )
    (building / READY).touch()
    shutil.rmtree(target, ignore_errors=True)
    building.rename(target)


def _run(command: list[str]) -> None:
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise InstallFailed(f"{command[2]} took over {INSTALL_TIMEOUT_SECONDS}s") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise InstallFailed(f"installing the requirements failed: {' | '.join(tail)}")
