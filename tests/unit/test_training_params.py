"""LoRA training hyperparameters: ranges refused with the field named, and the LR schedule."""

import itertools
import random

import pytest
from pydantic import ValidationError

from imagefleet.training.params import LoraTrainingParams, with_fixed_seed
from imagefleet.training.schedule import lr_factor


def _params(**fields: object) -> LoraTrainingParams:
    return LoraTrainingParams.model_validate({"output_name": "my-lora", **fields})


def _error_fields(exc: ValidationError) -> set[str]:
    return {".".join(str(part) for part in error["loc"]) for error in exc.errors()}


def test_defaults_are_a_valid_job_with_alpha_equal_to_rank() -> None:
    params = _params()
    assert params.rank == 16
    assert params.lora_alpha == 16
    assert params.mixed_precision == "no"
    assert params.seed is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rank", 0),
        ("rank", 257),
        ("alpha", 0),
        ("learning_rate", 0),
        ("learning_rate", 2.0),
        ("lr_schedule", "exponential"),
        ("steps", 0),
        ("steps", 100_001),
        ("batch_size", 0),
        ("batch_size", 65),
        ("resolution", 16),
        ("resolution", 36),
        ("resolution", 4096),
        ("mixed_precision", "fp8"),
        ("checkpoint_every", 0),
        ("keep_last", 0),
        ("class_images", 0),
        ("seed", -1),
        ("seed", 2**32),
        ("output_name", "../escape"),
        ("output_name", ""),
        ("trigger_words", [" "]),
        ("max_grad_norm", 0),
        ("rank", True),
        ("train_text_encoder", 1),
    ],
)
def test_a_value_out_of_range_is_refused_naming_its_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as caught:
        _params(**{field: value})
    assert field in _error_fields(caught.value)


def test_an_unknown_field_is_refused_not_ignored() -> None:
    with pytest.raises(ValidationError) as caught:
        _params(learning_rat=1e-4)
    assert "learning_rat" in _error_fields(caught.value)


def test_a_warmup_as_long_as_the_run_is_refused_with_both_fields_named() -> None:
    with pytest.raises(ValidationError, match=r"lr_warmup_steps \(100\).*steps \(100\)"):
        _params(steps=100, lr_warmup_steps=100)
    assert _params(steps=100, lr_warmup_steps=99).lr_warmup_steps == 99


def test_prior_preservation_needs_a_class_prompt_and_a_class_prompt_needs_it() -> None:
    with pytest.raises(ValidationError, match="class_prompt is required"):
        _params(prior_preservation=True)
    with pytest.raises(ValidationError, match="prior_preservation is false"):
        _params(class_prompt="a photo of dog")
    assert _params(prior_preservation=True, class_prompt="a photo of dog").class_images == 100


def test_trigger_words_default_to_the_instance_prompt() -> None:
    assert _params(instance_prompt="a photo of sks dog").effective_trigger_words() == [
        "a photo of sks dog"
    ]
    assert _params(instance_prompt="x", trigger_words=["sks"]).effective_trigger_words() == ["sks"]
    assert _params().effective_trigger_words() == []


def test_a_missing_seed_is_fixed_once_and_a_given_seed_is_kept() -> None:
    fixed = with_fixed_seed(_params(), random.Random(7))
    assert fixed.seed == random.Random(7).randint(0, 2**32 - 1)
    assert with_fixed_seed(fixed).seed == fixed.seed
    assert with_fixed_seed(_params(seed=5)).seed == 5


def test_warmup_rises_from_above_zero_to_the_full_rate() -> None:
    factors = [lr_factor(step, "constant", 4, 10) for step in range(10)]
    assert factors[:4] == [0.2, 0.4, 0.6, 0.8]
    assert factors[4:] == [1.0] * 6


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_decaying_schedules_fall_steadily_and_never_reach_zero(schedule: str) -> None:
    factors = [lr_factor(step, schedule, 2, 12) for step in range(12)]  # type: ignore[arg-type]
    decay = factors[2:]
    assert decay[0] == 1.0
    assert all(later < earlier for earlier, later in itertools.pairwise(decay))
    assert decay[-1] > 0
    assert lr_factor(50, schedule, 2, 12) == decay[-1]  # type: ignore[arg-type]


def test_linear_ends_one_decay_step_above_zero() -> None:
    assert lr_factor(9, "linear", 0, 10) == pytest.approx(0.1)
