"""Plug-ins built by the tests for worker/plugins.py: a tiny safety classifier (a real torch
module with fixed weights: mean brightness through one linear unit and a sigmoid) and a
word-for-word prompt translator."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from PIL import Image
from torch import nn


class _Classifier(nn.Module):
    """P(unsafe) = sigmoid(steepness * (mean brightness - threshold)), brightness in 0..1."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.linear = nn.Linear(1, 1)
        with torch.no_grad():
            self.linear.weight.fill_(50.0)
            self.linear.bias.fill_(-50.0 * threshold)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.linear(pixels.mean().reshape(1, 1)))


class _Filter:
    threshold = 0.5

    def __init__(self) -> None:
        self.model = _Classifier(self.threshold).eval()

    def is_unsafe(self, image: Image.Image) -> bool:
        pixels = torch.from_numpy(np.asarray(image.convert("L"), dtype=np.float32) / 255.0)
        with torch.no_grad():
            return bool(self.model(pixels).item() > 0.5)


class FlagsBrightImages(_Filter):
    """Flags any image brighter than almost black (every demo image)."""

    threshold = 0.01


class FlagsNothing(_Filter):
    """Flags only images brighter than white: none."""

    threshold = 1.01


class FrenchToEnglish:
    """A word-for-word translator, standing in for an open-source translation model."""

    WORDS: ClassVar[dict[str, str]] = {
        "une": "a",
        "photo": "photo",
        "de": "of",
        "le": "the",
        "chat": "cat",
    }

    def rewrite(self, prompt: str) -> str:
        return " ".join(self.WORDS.get(word, word) for word in prompt.split())
