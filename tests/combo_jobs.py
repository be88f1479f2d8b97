"""Running one assignment through the worker's real handler and engine, in process: what the
combo and preprocess tests share."""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from imagefleet.kinds.base import combo_key
from imagefleet.protocol import ModelKind, ModelRole
from imagefleet.tiny_models.embedding import DEFAULT_TOKEN
from imagefleet.worker.engines.managed_engine import ManagedEngine
from imagefleet.worker.handlers import load_handlers
from imagefleet.worker.handlers.base import JobContext
from imagefleet.worker_protocol import Assignment, InputRef, ModelRef
from tests.tiny_zoo import spec, tiny_zoo

PROMPT = "a photo of the cat"


def ref(path: Path, role: ModelRole, weight: float | None = None) -> ModelRef:
    model = spec(path, role.model_kind.value)
    triggers = [DEFAULT_TOKEN] if role is ModelRole.embedding else []
    return ModelRef(
        name=path.name,
        version=1,
        kind=ModelKind(model.kind),
        role=role,
        weight=weight,
        trigger_words=triggers,
        source=model.source,
        sha256=model.sha256,
        size_bytes=model.size_bytes,
    )


def checkpoint() -> ModelRef:
    return ref(tiny_zoo().sd15, ModelRole.checkpoint)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class Job:
    """One assignment run by the real handler on the engine; its pixels and stage seconds."""

    def __init__(
        self,
        engine: ManagedEngine,
        models: list[ModelRef],
        *,
        kind: str = "txt2img",
        prompt: str = PROMPT,
        inputs: dict[str, Image.Image] | None = None,
        **params: Any,
    ) -> None:
        files = {name: png(image) for name, image in (inputs or {}).items()}
        refs = [
            InputRef(
                name=name,
                input_id=hashlib.sha256(data).hexdigest()[:32],
                url=f"/inputs/{name}",
                sha256=hashlib.sha256(data).hexdigest(),
                content_type="image/png",
                width=64,
                height=64,
            )
            for name, data in files.items()
        ]
        body: dict[str, Any] = dict(params)
        if kind != "preprocess":
            body.update(prompt=prompt, model="tiny", steps=2, seed=7)
        ids = {name: ref.input_id for name, ref in zip(files, refs, strict=True)}
        if "control_image" in ids:
            weight = next((m.weight for m in models if m.role is ModelRole.controlnet), 1.0)
            control = {"name": "edges", "image": ids.pop("control_image"), "weight": weight}
            body["controlnet"] = control
        body.update(ids)
        if kind != "preprocess":  # the size admission fixes for image-to-image kinds
            body.update(width=64, height=64)
        assignment = Assignment(
            job_id="job",
            attempt_id="attempt",
            fencing_token=1,
            lease_seconds=30.0,
            lease_expires_at=datetime.now(UTC),
            kind=kind,
            params=body,
            models=models,
            combo_key=combo_key([(m.role, m.sha256) for m in models]),
            inputs=refs,
        )
        self.steps: list[tuple[int, int]] = []
        self.ctx = JobContext(
            assignment=assignment,
            engine=engine,
            cache=engine.manager.cache,
            fetch=lambda url: files[url.rsplit("/", 1)[1]],
            on_step=lambda done, total: self.steps.append((done, total)),
            should_stop=lambda: False,
        )
        outputs = load_handlers()[kind].run(self.ctx)
        self.combo_key = assignment.combo_key
        self.outputs = outputs
        self.pixels = [
            np.asarray(Image.open(io.BytesIO(o.data)).convert("RGB")).astype(np.float64)
            for o in outputs
        ]

    @property
    def image(self) -> np.ndarray:
        return self.pixels[0]
