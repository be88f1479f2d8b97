"""The manager reads wire model references, old and new, and names combos stably."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from imagefleet.worker.engines.model_specs import ModelSpec, combo_key, only, spec_from_ref
from imagefleet.worker_protocol import ModelRef

SHA = "a" * 64


def test_todays_model_refs_become_checkpoint_specs() -> None:
    ref = ModelRef(
        name="demo", version=1, kind="checkpoint", source="/m", sha256=SHA, size_bytes=10
    )
    spec = spec_from_ref(ref)
    assert (spec.kind, spec.role, spec.weight, spec.trigger_words) == (
        "checkpoint",
        "checkpoint",
        None,
        (),
    )


def test_refs_with_roles_weights_and_triggers_keep_them() -> None:
    ref = SimpleNamespace(
        name="style",
        version=2,
        kind="lora",
        role="lora",
        base="sdxl",
        weight=0.7,
        source="hf:org/style",
        sha256=SHA,
        size_bytes=5,
        config_source=None,
        config_sha256=None,
        trigger_words=["pixelart"],
        format="kohya",
    )
    spec = spec_from_ref(ref)
    assert (spec.base, spec.weight, spec.trigger_words, spec.format) == (
        "sdxl",
        0.7,
        ("pixelart",),
        "kohya",
    )


def _spec(role: str, sha: str, weight: float | None = None) -> ModelSpec:
    return ModelSpec("m", sha, 1, "/m", role, role, weight=weight)


def test_a_combo_key_ignores_order_but_not_weights() -> None:
    a, b = _spec("checkpoint", "1" * 64), _spec("lora", "2" * 64, 0.5)
    assert combo_key([a, b]) == combo_key([b, a])
    assert combo_key([a, b]) != combo_key([a, _spec("lora", "2" * 64, 0.6)])


def test_two_checkpoints_in_one_job_are_refused() -> None:
    with pytest.raises(ValueError, match="at most one checkpoint"):
        only([_spec("checkpoint", "1" * 64), _spec("checkpoint", "2" * 64)], "checkpoint")
