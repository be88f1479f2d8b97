"""Every PNG carries the parameters that made it."""

from __future__ import annotations

import io

from PIL import Image

from imagefleet.worker.png import encode_png, read_parameters

PARAMS = {
    "prompt": "a cat",
    "negative_prompt": "blurry",
    "model": "demo",
    "width": 64,
    "height": 32,
    "steps": 4,
    "guidance_scale": 7.0,
    "seed": 5,
    "num_images": 2,
    "scheduler": "dpmpp_2m_karras",
}


def test_png_text_chunks_hold_exact_and_human_readable_parameters() -> None:
    data = encode_png(Image.new("RGB", (64, 32), "red"), PARAMS, seed=6, model_sha256="ab" * 32)
    assert read_parameters(data) == {**PARAMS, "seed": 6, "model_sha256": "ab" * 32}
    with Image.open(io.BytesIO(data)) as image:
        text = image.text["parameters"]  # type: ignore[attr-defined]
        assert image.size == (64, 32)
    assert text.startswith("a cat\nNegative prompt: blurry\nSteps: 4, Sampler: DPM++ 2M Karras, ")
    assert "Seed: 6" in text
