"""`imagefleet submit`'s combo options: NAME or NAME:WEIGHT, a version kept in the name."""

from __future__ import annotations

import pytest
import typer

from imagefleet.cli.submit import _weighted


def test_lora_and_controlnet_values_read_name_and_weight() -> None:
    assert _weighted("tiny-lora", "--lora") == {"name": "tiny-lora"}
    assert _weighted("tiny-lora:0.8", "--lora") == {"name": "tiny-lora", "weight": 0.8}
    assert _weighted("style@3:-0.5", "--lora") == {"name": "style@3", "weight": -0.5}
    with pytest.raises(typer.Exit):
        _weighted("tiny-lora:strong", "--lora")
