"""What a handler is: the worker side of one job kind.

The loop claims an assignment, finds the handler registered for its kind, and gives it a
`JobContext`: the engine, the model cache, the job's inputs, progress and stop callbacks, and
a record of stage timings. The handler returns its output files; the loop uploads them and
completes the attempt. A handler raises:
- `GenerationCancelled` (engines.base) when `ctx.should_stop()` turned true;
- `InvalidJobInput` for what no worker could ever do with this job (final);
- `InputUnavailable` when an input could not be fetched (retried);
- the model cache's `SourceError`/`VerificationError` when a model could not be (retried).
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from imagefleet.worker_protocol import Assignment, ModelRef, StageTimings

if TYPE_CHECKING:
    from PIL import Image

    from imagefleet.worker.engines.base import StepCallback, StopCheck
    from imagefleet.worker.heartbeat import Heartbeat
    from imagefleet.worker.model_cache import ModelCache
    from imagefleet.worker.orchestrator_client import OrchestratorClient


class InvalidJobInput(ValueError):
    """The job cannot succeed on any worker (e.g. an unreadable init image): a final failure."""


class InputUnavailable(RuntimeError):
    """An input file could not be fetched or did not match its hash: retried later."""


@dataclass(frozen=True)
class OutputFile:
    data: bytes
    content_type: str = "image/png"
    seed: int | None = None
    width: int | None = None
    height: int | None = None


@dataclass
class JobContext:
    assignment: Assignment
    engine: Any
    cache: ModelCache
    fetch: Callable[[str], bytes]
    on_step: StepCallback
    should_stop: StopCheck
    seconds: dict[str, float] = field(default_factory=dict)
    # For kinds that talk to the orchestrator while they run (train_lora: checkpoints, resume,
    # loss in heartbeats); the loop sets both.
    client: OrchestratorClient | None = None
    heartbeat: Heartbeat | None = None

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Adds the time spent inside to the stage (`download`, `model_load`, `inference`...)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def model_files(self, ref: ModelRef) -> tuple[Path, Path | None]:
        """The verified local path of a model (and of its configs folder), fetched if needed."""
        with self.stage("download"):
            path, _ = self.cache.ensure(ref.source, ref.sha256, ref.size_bytes)
            config = None
            if ref.config_source and ref.config_sha256:
                config, _ = self.cache.ensure(ref.config_source, ref.config_sha256, 1 << 30)
        return path, config

    def input_image(self, name: str) -> Image.Image:
        """The decoded input `name` (e.g. init_image), checked against its recorded hash."""
        from PIL import Image

        ref = next((i for i in self.assignment.inputs if i.name == name), None)
        if ref is None:
            raise InvalidJobInput(f"the job has no input {name!r}")
        with self.stage("download"):
            try:
                data = self.fetch(ref.url)
            except Exception as exc:
                raise InputUnavailable(f"input {name} could not be fetched: {exc}") from exc
        if hashlib.sha256(data).hexdigest() != ref.sha256:
            raise InputUnavailable(f"input {name} does not match its recorded sha256")
        image = Image.open(io.BytesIO(data))
        image.load()
        return image

    def input_bytes(self, name: str) -> bytes:
        """The raw input `name` (e.g. a dataset zip), checked against its recorded hash."""
        ref = next((i for i in self.assignment.inputs if i.name == name), None)
        if ref is None:
            raise InvalidJobInput(f"the job has no input {name!r}")
        with self.stage("download"):
            try:
                data = self.fetch(ref.url)
            except Exception as exc:
                raise InputUnavailable(f"input {name} could not be fetched: {exc}") from exc
        if hashlib.sha256(data).hexdigest() != ref.sha256:
            raise InputUnavailable(f"input {name} does not match its recorded sha256")
        return data

    def timings(self, upload_seconds: float) -> StageTimings:
        return StageTimings(
            download_seconds=self.seconds.get("download", 0.0),
            model_load_seconds=self.seconds.get("model_load", 0.0),
            adapter_seconds=self.seconds.get("adapter", 0.0),
            inference_seconds=self.seconds.get("inference", 0.0),
            decode_seconds=self.seconds.get("decode", 0.0),
            upload_seconds=upload_seconds,
        )


class Handler(Protocol):
    """One job kind on the worker."""

    kind: str

    def supports(self, engine: Any) -> bool:
        """Whether this worker's engine can run the kind (only then is it advertised)."""
        ...

    def run(self, ctx: JobContext) -> list[OutputFile]: ...
