"""What a txt2img request may contain, checked before anything is stored."""

from __future__ import annotations

from typing import Annotated

import pytest
from pydantic import Field, ValidationError

from imagefleet.kinds.txt2img import Txt2ImgJob, Txt2ImgParams
from imagefleet.protocol import SCHEDULER_NAMES, Strict
from imagefleet.worker_protocol import ClaimRequest

BASE = {"prompt": "a cat", "model": "demo"}


def error_fields(**fields: object) -> set[str]:
    with pytest.raises(ValidationError) as info:
        Txt2ImgParams(**{**BASE, **fields})
    return {str(error["loc"][0]) for error in info.value.errors()}


def test_defaults_are_a_valid_job_with_no_seed_yet() -> None:
    params = Txt2ImgParams(**BASE)
    assert (params.width, params.height, params.steps, params.num_images) == (512, 512, 30, 1)
    assert params.seed is None


def test_phone_shaped_sizes_are_accepted() -> None:
    assert Txt2ImgParams(**BASE, width=576, height=1024).height == 1024


@pytest.mark.parametrize("side", ["width", "height"])
def test_sizes_must_be_multiples_of_eight(side: str) -> None:
    assert error_fields(**{side: 100}) == {side}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("steps", 0),
        ("steps", 151),
        ("num_images", 0),
        ("num_images", 9),
        ("seed", -2),
        ("seed", 2**32),
        ("guidance_scale", -1.0),
        ("prompt", ""),
        ("model", ""),
    ],
)
def test_out_of_range_fields_are_named_in_the_error(field: str, value: object) -> None:
    assert error_fields(**{field: value}) == {field}


def test_every_documented_scheduler_is_accepted_and_others_refused() -> None:
    for name in SCHEDULER_NAMES:
        assert Txt2ImgParams(**BASE, scheduler=name).scheduler == name
    assert error_fields(scheduler="heun_magic") == {"scheduler"}


def test_seed_minus_one_means_random_as_in_a1111() -> None:
    assert Txt2ImgParams(**BASE, seed=-1).seed is None
    assert Txt2ImgParams(**BASE, seed=0).seed == 0


def test_unknown_fields_are_refused_rather_than_ignored() -> None:
    assert error_fields(stpes=20) == {"stpes"}
    with pytest.raises(ValidationError):
        Txt2ImgJob.model_validate({"kind": "txt2img", "params": BASE, "priority": 9})


class _Numbers(Strict):
    """Every shape of number and boolean field a wire model may declare."""

    plain: float = 0.0
    optional: float | None = None
    constrained: Annotated[float, Field(ge=0.0, le=10.0)] = 0.0
    count: int | None = None
    flag: bool | None = None


@pytest.mark.parametrize("field", ["plain", "optional", "constrained", "count"])
def test_json_booleans_are_refused_for_every_kind_of_number_field(field: str) -> None:
    with pytest.raises(ValidationError) as info:
        _Numbers.model_validate({field: True})
    assert [(e["loc"], "not true or false" in e["msg"]) for e in info.value.errors()] == [
        ((field,), True)
    ]


def test_numbers_and_none_still_pass_and_booleans_stay_booleans() -> None:
    parsed = _Numbers.model_validate(
        {"plain": 1, "optional": None, "constrained": 2.5, "count": 3, "flag": None}
    )
    assert (parsed.plain, parsed.optional, parsed.constrained, parsed.count) == (1.0, None, 2.5, 3)
    assert _Numbers.model_validate({"flag": False}).flag is False
    with pytest.raises(ValidationError):
        _Numbers.model_validate({"flag": 0})


def test_a_boolean_guidance_scale_or_claim_wait_is_refused_naming_the_field() -> None:
    assert error_fields(guidance_scale=True) == {"guidance_scale"}
    with pytest.raises(ValidationError) as info:
        ClaimRequest.model_validate({"worker_id": "w", "node_id": "n", "wait_seconds": True})
    assert [e["loc"] for e in info.value.errors()] == [("wait_seconds",)]
    assert Txt2ImgParams(**BASE, guidance_scale=1).guidance_scale == 1.0
