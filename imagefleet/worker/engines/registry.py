"""Turns the worker's `--engine` option into an engine instance.

A worker normally runs `ManagedEngine` (model combos through the model manager; the
single-model `DiffusersEngine` stays available as
``imagefleet.worker.engines.diffusers_engine:DiffusersEngine``). Tests and benchmarks need to
run the real worker loop (claims, leases, heartbeats, uploads) without paying for real
inference, so the engine is pluggable: a spec of the form ``module.path:ClassName`` imports
that module and builds ``ClassName(device)``, e.g. ``tests.chaos_engine:SleepEngine``.

Importing a module executes its code inside the worker process. The spec is therefore an
operator option, read from the worker's command line or environment only; it is never taken
from a job, an assignment or anything else the orchestrator or a client sends.

The diffusers module (and with it torch) is imported only when the diffusers engine is asked
for, so resolving another spec costs nothing here.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from imagefleet.worker.engines.diffusers_engine import (
        GeneratedImage,
        StepCallback,
        StopCheck,
        Txt2ImgRequest,
    )
    from imagefleet.worker.engines.managed_engine import ManagedEngine

DEFAULT_ENGINE = "diffusers"
# What the worker loop calls on an engine; checked when a plug-in engine is built so that a
# wrong class fails at start-up, not in the middle of the first job.
REQUIRED_MEMBERS = ("resident_model", "load", "txt2img")


class Engine(Protocol):
    """The interface the worker loop uses: `DiffusersEngine` and any plug-in engine alike.

    `txt2img` must raise `diffusers_engine.GenerationCancelled` when `should_stop()` turns
    true, and take a `diffusers_engine.Txt2ImgRequest`: the worker catches and builds exactly
    those classes.
    """

    @property
    def resident_model(self) -> str | None: ...

    def load(self, model_key: str, path: Path, config_dir: Path | None = None) -> float: ...

    def txt2img(
        self, request: Txt2ImgRequest, on_step: StepCallback, should_stop: StopCheck
    ) -> list[GeneratedImage]: ...


class EngineSpecError(ValueError):
    """The `--engine` value is malformed or names something that cannot be built."""


def load_engine(spec: str, device: str | None = None) -> Engine | ManagedEngine:
    """Builds the engine named by `spec` for `device` (None: the engine's own default).

    "diffusers" (or an empty spec) is the real engine; "module.path:ClassName" imports the
    module, which runs its code, and calls ClassName(device).
    """
    spec = spec.strip()
    if spec in ("", DEFAULT_ENGINE):
        # A missing torch stays an ImportError: the CLI turns that into "install the extra".
        # The worker binds its disk cache to it (bind_cache) before the first job.
        from imagefleet.worker.engines.managed_engine import ManagedEngine

        return ManagedEngine(device)
    module_name, class_name = _split(spec)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EngineSpecError(
            f"engine {spec!r}: cannot import module {module_name!r}: {exc}"
        ) from exc
    factory = getattr(module, class_name, None)
    if not isinstance(factory, type):
        raise EngineSpecError(f"engine {spec!r}: {module_name} has no class {class_name!r}")
    engine = factory(device)
    missing = [name for name in REQUIRED_MEMBERS if not hasattr(engine, name)]
    if missing:
        raise EngineSpecError(f"engine {spec!r} is not an engine: it lacks {', '.join(missing)}")
    return engine


def _split(spec: str) -> tuple[str, str]:
    module_name, colon, class_name = spec.partition(":")
    if not colon or not module_name or not class_name.isidentifier():
        raise EngineSpecError(
            f"engine {spec!r}: expected {DEFAULT_ENGINE!r} or 'module.path:ClassName'"
        )
    if not all(part.isidentifier() for part in module_name.split(".")):
        raise EngineSpecError(f"engine {spec!r}: {module_name!r} is not a module path")
    return module_name, class_name
