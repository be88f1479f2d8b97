"""Training images as tensors, and the order they are drawn in.

The order is a pure function of (seed, sample number): sample k of the run is item
``order(epoch)[k % n]`` with ``epoch = k // n``, each epoch a fresh shuffle keyed by the seed.
A checkpoint therefore needs only the number of samples seen to resume the exact sequence, on
any worker: the shuffle is built from sha256, not from a library's random stream, so it does not
change with the numpy or Python version a worker happens to have.
"""

from __future__ import annotations

import hashlib
import io
from functools import lru_cache

import numpy as np
import torch
from PIL import Image, ImageOps

from imagefleet.training.dataset import DatasetItem


def batch_indices(
    seed: int, first_sample: int, batch_size: int, count: int, stream: str
) -> list[int]:
    """Item indices of samples first_sample .. first_sample + batch_size - 1 of ``stream``.

    ``stream`` names an independent order ("instance", "class") so that the class images of
    prior preservation are not drawn in lock-step with the instance images.
    """
    if count < 1:
        raise ValueError("cannot draw samples from an empty dataset")
    indices = []
    for sample in range(first_sample, first_sample + batch_size):
        epoch, position = divmod(sample, count)
        indices.append(_epoch_order(seed, epoch, count, stream)[position])
    return indices


@lru_cache(maxsize=8)
def _epoch_order(seed: int, epoch: int, count: int, stream: str) -> tuple[int, ...]:
    def key(index: int) -> bytes:
        return hashlib.sha256(f"{stream}:{seed}:{epoch}:{index}".encode()).digest()

    return tuple(sorted(range(count), key=key))


def image_tensor(item: DatasetItem, resolution: int) -> torch.Tensor:
    """The image as a (3, resolution, resolution) float tensor in [-1, 1].

    EXIF rotation is applied, the shorter side is resized to ``resolution`` and the centre is
    cropped: the DreamBooth recipe's preprocessing, without random augmentation, so that the
    cached latents are the same on every worker.
    """
    image, (_, _, top, left) = _resized(item, resolution)
    image = image.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def crop_geometry(item: DatasetItem, resolution: int) -> tuple[int, int, int, int]:
    """(original height, width, crop top, crop left) of `image_tensor`'s crop: what SDXL's
    UNet is conditioned on (its "micro-conditioning" time ids)."""
    return _resized(item, resolution)[1]


def _resized(item: DatasetItem, resolution: int) -> tuple[Image.Image, tuple[int, int, int, int]]:
    with Image.open(io.BytesIO(item.data)) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    original = (image.height, image.width)
    scale = resolution / min(image.size)
    size = (
        max(resolution, round(image.width * scale)),
        max(resolution, round(image.height * scale)),
    )
    image = image.resize(size, Image.Resampling.BILINEAR)
    left = (image.width - resolution) // 2
    top = (image.height - resolution) // 2
    return image, (*original, top, left)
