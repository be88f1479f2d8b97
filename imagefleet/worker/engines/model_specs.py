"""The models one job needs, as the model manager sees them, and the combo key that names them.

The wire format (``protocol.ModelRef`` inside an Assignment) is the lead's; this module keeps
the manager independent of its exact shape: ``spec_from_ref`` is the one place that reads a
wire reference, and it accepts references with or without the newer fields (role, base,
weight, trigger words, format). Torch-free.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

ROLES = ("checkpoint", "refiner", "vae", "lora", "embedding", "controlnet")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    sha256: str
    size_bytes: int
    source: str
    kind: str  # checkpoint, lora, vae, embedding, controlnet
    role: str  # one of ROLES: a checkpoint may serve as the refiner
    base: str | None = None  # sd15, sdxl
    weight: float | None = None  # LoRA strength, ControlNet conditioning scale
    config_source: str | None = None
    config_sha256: str | None = None
    trigger_words: tuple[str, ...] = ()
    format: str | None = None  # diffusers, single_file, kohya, peft


def spec_from_ref(ref: Any) -> ModelSpec:
    """Reads a wire ModelRef (or anything with its attributes) into a ModelSpec."""
    kind = str(getattr(ref, "kind", "checkpoint"))
    role = getattr(ref, "role", None)
    return ModelSpec(
        name=str(ref.name),
        sha256=str(ref.sha256),
        size_bytes=int(ref.size_bytes),
        source=str(ref.source),
        kind=kind,
        role=str(role) if role is not None else kind,
        base=_optional_str(getattr(ref, "base", None)),
        weight=getattr(ref, "weight", None),
        config_source=getattr(ref, "config_source", None),
        config_sha256=getattr(ref, "config_sha256", None),
        trigger_words=tuple(getattr(ref, "trigger_words", None) or ()),
        format=_optional_str(getattr(ref, "format", None)),
    )


def combo_key(models: Iterable[ModelSpec]) -> str:
    """A stable name for the set: sha256 of the sorted (role, sha256, weight) lines."""
    lines = sorted(f"{m.role}\0{m.sha256}\0{_weight(m.weight)}" for m in models)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def by_role(models: Sequence[ModelSpec], role: str) -> list[ModelSpec]:
    return [m for m in models if m.role == role]


def only(models: Sequence[ModelSpec], role: str) -> ModelSpec | None:
    """The one model with this role, None if absent; two of a single-valued role is an error."""
    found = by_role(models, role)
    if len(found) > 1:
        names = ", ".join(m.name for m in found)
        raise ValueError(f"a job takes at most one {role}, not {len(found)} ({names})")
    return found[0] if found else None


def _weight(weight: float | None) -> str:
    return "" if weight is None else repr(float(weight))


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)
