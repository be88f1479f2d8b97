"""workflow on the worker: runs a version of a Python deployment in its own warm process.

Per job: the package (an input of the job) is fetched and checked against its recorded
sha256, which must also be the version id; it is extracted once per version on disk and its
requirements installed once per set (deploy_envs.py). One process per version stays warm
(deploy_process.py): `setup(models)` runs when it starts, `run(inputs, context)` per job. The
versions kept warm are reported as resident combos, so the scheduler sends their runs here.
A spare process with torch and diffusers already imported (IMAGEFLEET_WORKER_DEPLOY_PREWARM)
takes the next new version that runs on the worker's own interpreter, so deploy-to-first-result
does not wait for those imports. It is kept once the worker has run a deployment, or from the
first claim with IMAGEFLEET_WORKER_DEPLOY_PREWARM_AT_START=1.

Failures: a failing setup, a run that raises, a wrong number or type of output files, and
requirements this worker may not install are final (the same code fails the same way
anywhere), each naming the version; a process that dies is retried elsewhere.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagefleet.worker.deploy_envs import (
    DeploySettings,
    InstallFailed,
    InstallsRefused,
    env_python,
    package_dir,
)
from imagefleet.worker.deploy_process import PipelineCancelled, PipelineFailed, PipelineProcess
from imagefleet.worker.handlers.base import (
    InputUnavailable,
    InvalidJobInput,
    JobContext,
    OutputFile,
)

CONTENT_TYPES = {".png": "image/png", ".txt": "text/plain", ".json": "application/json"}


@dataclass
class _Warm:
    process: PipelineProcess
    combo_key: str | None
    python: str


class WorkflowHandler:
    kind = "workflow"

    def __init__(self) -> None:
        self._warm: OrderedDict[str, _Warm] = OrderedDict()
        self._lock = threading.Lock()
        self._spare: PipelineProcess | None = None
        # What the last jobs did, for tests and the benchmark: env builds and process starts.
        self.envs_built = 0
        self.processes_started = 0

    def supports(self, engine: Any) -> bool:
        """Torch engines (context.device is theirs), as for comfy."""
        return getattr(engine, "torch_device", None) is not None

    def resident_combos(self) -> list[str]:
        """The combo keys of the versions whose process is warm (newest first). Asked at every
        claim, it is also where the spare process is (re)started."""
        self._prewarm(DeploySettings())
        with self._lock:
            return [w.combo_key for w in reversed(self._warm.values()) if w.combo_key]

    def run(self, ctx: JobContext) -> list[OutputFile]:
        from imagefleet.kinds import get_kind
        from imagefleet.kinds.workflow import PACKAGE_INPUT

        params = get_kind(self.kind).parse(ctx.assignment.params)
        version = str(params.version)
        label = f"deployment {params.deployment} v{params.number} ({version[:12]})"
        settings = DeploySettings()
        root = ctx.cache.root / ".deployments"
        warm = self._warm.get(version)
        if warm is None or not warm.process.alive():
            data = ctx.input_bytes(PACKAGE_INPUT)
            if hashlib.sha256(data).hexdigest() != version:
                raise InputUnavailable(f"{label}: the package does not match its version id")
            with ctx.stage("download"):
                directory = package_dir(root, version, data)
            try:
                with ctx.stage("adapter"):
                    python, built = env_python(root, params.requirements, directory, settings)
            except InstallsRefused as exc:
                raise InvalidJobInput(f"{label}: {exc}") from exc
            except InstallFailed as exc:
                raise InvalidJobInput(f"{label}: {exc}") from exc
            self.envs_built += int(built)
            models = self._models(ctx)
            warm = self._start(version, directory, python, models, label, settings)
            warm.combo_key = ctx.assignment.combo_key
        with self._lock:
            self._warm.move_to_end(version)
        return self._run_once(ctx, warm, params, label)

    def _models(self, ctx: JobContext) -> dict[str, Any]:
        """setup's `models`: per role one model (or a list, for roles with several), each its
        name, version, sha256 and verified local path."""
        by_role: dict[str, list[dict[str, Any]]] = {}
        for ref in ctx.assignment.models:
            path, config = ctx.model_files(ref)
            by_role.setdefault(ref.role.value, []).append(
                {
                    "name": ref.name,
                    "version": ref.version,
                    "sha256": ref.sha256,
                    "path": str(path),
                    "config_path": str(config) if config else None,
                    "format": ref.format,
                }
            )
        return {role: found[0] if len(found) == 1 else found for role, found in by_role.items()}

    def _start(
        self,
        version: str,
        directory: Path,
        python: str,
        models: dict[str, Any],
        label: str,
        settings: DeploySettings,
    ) -> _Warm:
        with self._lock:
            old = self._warm.pop(version, None)
            while len(self._warm) >= max(1, settings.warm_deployments):
                _, evicted = self._warm.popitem(last=False)
                evicted.process.close()
        if old is not None:
            old.process.close()
        process = self._process_for(python, settings)
        try:
            process.setup(directory, models)
        except PipelineFailed as exc:
            process.close()
            raise InvalidJobInput(f"{label}: setup failed: {exc}\n{exc.details}") from exc
        warm = _Warm(process, None, python)
        with self._lock:
            self._warm[version] = warm
        return warm

    def _run_once(self, ctx: JobContext, warm: _Warm, params: Any, label: str) -> list[OutputFile]:
        from imagefleet.worker.engines.base import GenerationCancelled

        output_dir = Path(tempfile.mkdtemp(prefix="imagefleet-run-"))
        try:
            request = {
                "inputs": params.inputs,
                "seed": params.seed,
                "device": str(getattr(ctx.engine, "torch_device", None) or "cpu"),
                "output_dir": str(output_dir),
                "job_id": ctx.assignment.job_id,
            }
            try:
                with ctx.stage("inference"):
                    names = warm.process.run(request, ctx.on_step, ctx.should_stop)
            except PipelineCancelled as exc:
                raise GenerationCancelled(str(exc)) from exc
            except PipelineFailed as exc:
                if not warm.process.alive():
                    with self._lock:
                        self._warm.pop(str(params.version), None)
                    raise RuntimeError(f"{label}: {exc}") from exc  # retried elsewhere
                raise InvalidJobInput(f"{label}: run failed: {exc}\n{exc.details}") from exc
            return _outputs(output_dir, names, params.outputs, label)
        finally:
            shutil.rmtree(output_dir, ignore_errors=True)

    def spare_ready(self) -> bool:
        """Whether a spare process has its modules imported (the benchmark waits for it)."""
        spare = self._spare
        return spare is not None and spare.preloaded

    def _prewarm(self, settings: DeploySettings) -> None:
        if not settings.deploy_prewarm:
            return
        if not (settings.deploy_prewarm_at_start or self.processes_started):
            return
        with self._lock:
            if self._spare is not None and self._spare.alive():
                return
            self._spare = PipelineProcess(preload=settings.deploy_prewarm.split(","))
            self.processes_started += 1

    def _process_for(self, python: str, settings: DeploySettings) -> PipelineProcess:
        """The spare if it runs this interpreter (another is started at the next claim),
        else a new process."""
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None and spare.alive() and spare.python == python:
            return spare
        if spare is not None:
            with self._lock:
                self._spare = spare if spare.alive() else None
        self.processes_started += 1
        return PipelineProcess(python)

    def close(self) -> None:
        """Stops every warm process and the spare (a worker shutting down; tests)."""
        with self._lock:
            warm, self._warm = list(self._warm.values()), OrderedDict()
            spare, self._spare = self._spare, None
        for item in warm:
            item.process.close()
        if spare is not None:
            spare.close()


def _outputs(directory: Path, names: list[str] | None, count: int, label: str) -> list[OutputFile]:
    root = directory.resolve()
    if names is None:
        paths = sorted(p for p in root.iterdir() if p.is_file())
    else:
        paths = [(root / name).resolve() for name in names]
    if len(paths) != count:
        raise InvalidJobInput(
            f"{label}: run made {len(paths)} output files; the manifest says outputs = {count}"
        )
    files = []
    for path in paths:
        if root not in path.parents or not path.is_file():
            raise InvalidJobInput(f"{label}: output {path.name!r} is not a file in output_dir")
        content_type = CONTENT_TYPES.get(path.suffix.lower())
        if content_type is None:
            raise InvalidJobInput(
                f"{label}: output {path.name!r}: outputs are .png, .txt or .json files"
            )
        files.append(OutputFile(path.read_bytes(), content_type=content_type))
    return files


HANDLER = WorkflowHandler()
