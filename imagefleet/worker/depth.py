"""The depth annotator: a registered depth-estimation model (transformers DPT) on the CPU.

ControlNet depth models were trained on MiDaS/DPT relative depth, near bright and far dark,
normalised to the full grey range, at the image's size: that is what comes out here. The model
is a folder saved with transformers' `save_pretrained` (config.json + weights), registered with
kind `annotator`; it arrives through the worker's disk cache like every model of a job and is
kept loaded (a few, by content hash) for the next preprocess job. The image is resized to the
model's square input size (DPT reassembles a square patch grid) with the ImageNet-style 0.5
mean/std that DPT checkpoints use, and the prediction resized back (bicubic).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

KEEP_LOADED = 2
_loaded: OrderedDict[str, Any] = OrderedDict()
_lock = threading.Lock()


def depth_model(sha256: str, path: Path) -> Any:
    """The loaded model for this content hash (loaded from `path` the first time)."""
    with _lock:
        if sha256 in _loaded:
            _loaded.move_to_end(sha256)
            return _loaded[sha256]
    from transformers import AutoModelForDepthEstimation

    model = AutoModelForDepthEstimation.from_pretrained(str(path)).eval()
    with _lock:
        _loaded[sha256] = model
        while len(_loaded) > KEEP_LOADED:
            _loaded.popitem(last=False)
    return model


def estimate_depth(model: Any, image: Image.Image) -> Image.Image:
    """The depth map of `image` (RGB, the image's size): near is white, far black."""
    import torch

    side = int(getattr(model.config, "image_size", 384) or 384)
    rgb = image.convert("RGB")
    pixels = np.asarray(rgb.resize((side, side), Image.Resampling.BICUBIC), dtype=np.float32)
    tensor = torch.from_numpy((pixels / 255.0 - 0.5) / 0.5).permute(2, 0, 1).unsqueeze(0)
    with torch.no_grad():
        predicted = model(pixel_values=tensor).predicted_depth  # (1, h, w), larger = nearer
        resized = torch.nn.functional.interpolate(
            predicted.unsqueeze(1).float(), size=(rgb.height, rgb.width), mode="bicubic"
        )[0, 0]
    depth = resized.numpy().astype(np.float64)
    low, high = float(depth.min()), float(depth.max())
    scaled = (depth - low) / (high - low) if high > low else np.zeros_like(depth)
    grey = Image.fromarray((scaled * 255.0).round().clip(0, 255).astype(np.uint8), mode="L")
    return grey.convert("RGB")
