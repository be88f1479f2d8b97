"""What a job kind is: a registered spec that the lifecycle, store, scheduler and API handle
generically. One module per kind (txt2img.py, img2img.py, ...) subclasses `KindSpec`.

A spec says:
- `params_model`: the pydantic model of the kind's `params` (the API's submit body is a union
  discriminated on `kind`, built from every registered spec);
- `admit(params, limits, inputs)`: checks against this server's limits (422 naming the field)
  and fills what the server decides (a random seed), returning the params that are stored;
- `requirements(params)`: the models it needs by role (resolved at submit to exact versions),
  the input files it reads, pixels, a cost estimate and minimum VRAM;
- `outputs(params)`: how many files a successful attempt must produce, and of which types;
- `max_attempts`: its retry limit, when it differs from the server's default;
- `result_model(params)`: a model a succeeded job registers from its output (train_lora);
- `checkpoint_policy(params)`: for kinds that report resumable checkpoints, how many to keep;
- `batch_key(params)`: jobs with equal keys may run as one micro-batch (None: never).

Nothing here imports the orchestrator, the store or torch: the worker and the Python client
use the same params models.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, create_model

from imagefleet.errors import InvalidField
from imagefleet.protocol import JobSubmission, ModelKind, ModelRole, ModelUse, Strict

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Limits:
    """The server's limits a kind admits against (from Settings; see config.py)."""

    min_side: int = 64
    max_side: int = 2048
    max_pixels: int = 1536 * 1536
    max_loras: int = 5
    lora_weight_min: float = -2.0
    lora_weight_max: float = 2.0
    max_embeddings: int = 8


@dataclass(frozen=True)
class ModelNeed:
    """One model a job needs, as the client named it; `loc` is where, for error messages."""

    role: ModelRole
    use: ModelUse
    loc: Loc
    weight: float | None = None


@dataclass(frozen=True)
class InputNeed:
    """One uploaded input the job reads: the param it fills and the input id."""

    name: str
    input_id: str
    loc: Loc


@dataclass(frozen=True)
class InputInfo:
    """What the orchestrator knows of an uploaded input (the kind may check sizes)."""

    input_id: str
    content_type: str
    width: int
    height: int
    images: int | None = None  # a dataset zip: its images, and those without a caption
    uncaptioned: int | None = None


@dataclass(frozen=True)
class Requirements:
    models: tuple[ModelNeed, ...] = ()
    inputs: tuple[InputNeed, ...] = ()
    pixels: int = 0  # per image: what decides whether a worker can run it
    cost_units: float = 0.0  # megapixel-steps: comparable work across kinds
    min_vram_mb: int = 0
    # Something besides models that a worker keeps warm for this job (a deployment's version,
    # kinds/workflow.py): part of the combo key, so warm workers are preferred for it.
    warm_key: str | None = None


@dataclass(frozen=True)
class OutputSpec:
    count: int
    media_types: tuple[str, ...] = ("image/png",)
    extensions: Mapping[str, str] = field(
        default_factory=lambda: {"image/png": "png", "text/plain": "txt"}
    )

    def extension(self, media_type: str) -> str:
        return self.extensions.get(media_type, "bin")


@dataclass(frozen=True)
class ResultModel:
    """A model a succeeded job registers from one of its outputs (train_lora: the LoRA). Its
    base architecture is that of the job's model in `base_role`."""

    name: str
    kind: ModelKind
    output_index: int = 0
    format: str | None = None
    trigger_words: tuple[str, ...] = ()
    base_role: ModelRole = ModelRole.checkpoint


@dataclass(frozen=True)
class CheckpointPolicy:
    """For kinds whose attempts report resumable checkpoints (the `checkpoint` transition):
    how many the orchestrator keeps, and the steps a checkpoint may be at (1..total_steps-1)."""

    keep_last: int
    total_steps: int


class KindSpec:
    """Base class of every job kind; see the module docstring."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    params_model: ClassVar[type[Strict]]
    max_attempts: ClassVar[int | None] = None
    # The submit body; built from `name` and `params_model` when a kind does not define one.
    submission: ClassVar[type[BaseModel] | None] = None

    def parse(self, params: Mapping[str, Any]) -> Any:
        """Stored or assigned params back into the kind's model."""
        return self.params_model.model_validate(params)

    def admit(self, params: Any, limits: Limits, inputs: Mapping[str, InputInfo]) -> Any:
        return params

    def requirements(self, params: Any) -> Requirements:
        return Requirements()

    def outputs(self, params: Any) -> OutputSpec:
        return OutputSpec(count=1)

    def result_model(self, params: Any) -> ResultModel | None:
        """The model a successful job registers, if any (none for image kinds)."""
        return None

    def bind(self, conn: Any, owner: Any, params: Any) -> tuple[KindSpec, Any]:
        """Runs first at submit, inside its transaction: a kind whose params name something
        stored (a deployment) resolves it here, and may hand the job to another kind (a graph
        deployment runs as a comfy job). Most kinds have nothing to bind."""
        return self, params

    def checkpoint_policy(self, params: Any) -> CheckpointPolicy | None:
        """None: this kind's attempts do not checkpoint (the transition refuses them)."""
        return None

    def batch_key(self, params: Any) -> str | None:
        """Jobs with equal keys may be claimed together and run as one micro-batch (see
        kinds/batching.py); None, the default: never batched."""
        return None

    def job_model(self) -> type[BaseModel]:
        """The submit body for this kind: `{"kind": name, "params": ..., "webhook": ...}`."""
        cls = type(self)
        if cls.__dict__.get("submission") is None:
            title = self.name.title().replace("_", "") + "Job"
            cls.submission = create_model(
                title,
                __base__=JobSubmission,
                __doc__=self.summary or None,
                kind=(Literal[self.name], ...),  # type: ignore[arg-type]
                params=(self.params_model, ...),
            )
        submission = cls.__dict__["submission"]
        assert submission is not None
        return submission


def combo_key(models: Sequence[tuple[ModelRole, str]], warm_key: str | None = None) -> str | None:
    """A stable name for a set of models (role and content hash), and of what else must be
    warm (`Requirements.warm_key`): what must be resident for a job to run without loading
    anything. LoRA weights are not part of it: they are set per request on top of the
    resident adapters."""
    if not models and warm_key is None:
        return None
    canonical = "\n".join(sorted(f"{role.value}:{sha}" for role, sha in models))
    if warm_key is not None:
        canonical += f"\nwarm:{warm_key}"
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_side(value: int, field_name: str, limits: Limits, loc: Loc) -> None:
    if not limits.min_side <= value <= limits.max_side:
        raise InvalidField(
            loc,
            f"{field_name} must be between {limits.min_side} and {limits.max_side} "
            f"(a multiple of 8), got {value}",
        )
