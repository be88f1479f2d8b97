"""PNG encoding with the generation parameters embedded as text chunks.

Two chunks: `parameters` in the plain-text form image tools already read (prompt, then
`Negative prompt:`, then `Steps: …, Sampler: DPM++ 2M Karras, Seed: …`, samplers named by their
A1111 labels), and `imagefleet` with the exact JSON, so an image can be regenerated from the
file alone.
"""

from __future__ import annotations

import io
import json
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from imagefleet.samplers import sampler_label


def parameters_text(params: dict[str, Any], seed: int, model_sha256: str) -> str:
    lines = [params["prompt"]]
    if params.get("negative_prompt"):
        lines.append(f"Negative prompt: {params['negative_prompt']}")
    lines.append(
        f"Steps: {params['steps']}, Sampler: {sampler_label(params['scheduler'])}, "
        f"CFG scale: {params['guidance_scale']}, Seed: {seed}, "
        f"Size: {params['width']}x{params['height']}, Model: {params['model']}, "
        f"Model hash: {model_sha256[:10]}"
    )
    return "\n".join(lines)


def encode_png(image: Image.Image, params: dict[str, Any], seed: int, model_sha256: str) -> bytes:
    info = PngInfo()
    info.add_text("parameters", parameters_text(params, seed, model_sha256))
    info.add_text("imagefleet", json.dumps({**params, "seed": seed, "model_sha256": model_sha256}))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def read_parameters(data: bytes) -> dict[str, Any]:
    """The exact parameters stored by `encode_png` (for clients and tests)."""
    with Image.open(io.BytesIO(data)) as image:
        text = image.text.get("imagefleet")  # type: ignore[attr-defined]
    if text is None:
        raise ValueError("this PNG carries no imagefleet parameters")
    result: dict[str, Any] = json.loads(text)
    return result
