"""The generation params beyond the plain image: refiner, clip skip, hires fix, ControlNet, and
what admission checks of them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from imagefleet.errors import InvalidField
from imagefleet.kinds import get_kind
from imagefleet.kinds.base import Limits
from imagefleet.protocol import ModelRole

BASE = {"prompt": "a fox", "model": "xl", "width": 512, "height": 512}


def test_refiner_fields_need_a_refiner_and_one_hand_over() -> None:
    txt2img = get_kind("txt2img")
    with pytest.raises(ValidationError, match="need a refiner"):
        txt2img.parse({**BASE, "refiner_steps": 15})
    with pytest.raises(ValidationError, match="not both"):
        txt2img.parse({**BASE, "refiner": "r", "refiner_steps": 15, "refiner_switch": 0.8})
    with pytest.raises(ValidationError):
        txt2img.parse({**BASE, "clip_skip": 3})
    params = txt2img.parse(
        {**BASE, "refiner": "r", "refiner_steps": 15, "controlnet": {"name": "c", "image": "ab"}}
    )
    roles = [need.role for need in txt2img.requirements(params).models]
    assert roles == [ModelRole.checkpoint, ModelRole.refiner, ModelRole.controlnet]
    assert [need.name for need in txt2img.requirements(params).inputs] == ["control_image"]


def test_a_hires_pass_beyond_the_size_limits_is_refused_at_admission() -> None:
    txt2img = get_kind("txt2img")
    limits = Limits(max_side=1024, max_pixels=1024 * 1024)
    fits = txt2img.parse({**BASE, "hires": {"scale": 2.0}})
    assert txt2img.admit(fits, limits, {}).hires.scale == 2.0
    too_big = txt2img.parse({**BASE, "hires": {"scale": 2.5}})
    with pytest.raises(InvalidField, match="1280x1280"):
        txt2img.admit(too_big, limits, {})
