"""Annotators: images turned into ControlNet conditions, with numpy and PIL only.

A worker that preprocesses needs no annotator weights and no OpenCV, so any worker (CPU ones
included) can run a `preprocess` job and GPU workers stay small. Canny follows the classic
algorithm: Gaussian smoothing, Sobel gradients, non-maximum suppression along the gradient
direction, a double threshold and hysteresis (weak edges kept only when connected to strong
ones). Thresholds are on the 0-255 gradient scale, as OpenCV's and A1111's canny take them.
The result is white edges on black, the layout canny ControlNets were trained on.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

# Sobel on 0..255 grey levels gives magnitudes up to ~1443; OpenCV's canny thresholds apply to
# the same L2 magnitude, so no rescaling is needed.
_MAX_HYSTERESIS_ROUNDS = 10_000


def canny(image: Image.Image, low: int = 100, high: int = 200, blur: float = 1.4) -> Image.Image:
    """The canny edge map of ``image`` (RGB, same size): 255 on edges, 0 elsewhere."""
    if not 0 <= low <= high:
        raise ValueError(f"canny thresholds must satisfy 0 <= low <= high, got {low}, {high}")
    grey = image.convert("L")
    if blur > 0:
        grey = grey.filter(ImageFilter.GaussianBlur(blur))
    pixels = np.asarray(grey, dtype=np.float64)
    gx, gy = _sobel(pixels)
    magnitude = np.hypot(gx, gy)
    thin = _non_maximum_suppression(magnitude, gx, gy)
    strong = thin >= high
    weak = thin >= low
    edges = _hysteresis(strong, weak)
    out = np.where(edges, 255, 0).astype(np.uint8)
    return Image.fromarray(out, mode="L").convert("RGB")


def _sobel(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    padded = np.pad(pixels, 1, mode="edge")

    def at(dy: int, dx: int) -> np.ndarray:
        h, w = pixels.shape
        return padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    gx = (at(-1, 1) + 2 * at(0, 1) + at(1, 1)) - (at(-1, -1) + 2 * at(0, -1) + at(1, -1))
    gy = (at(1, -1) + 2 * at(1, 0) + at(1, 1)) - (at(-1, -1) + 2 * at(-1, 0) + at(-1, 1))
    return gx, gy


def _non_maximum_suppression(magnitude: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Keeps a pixel only where its magnitude peaks across the edge (4 quantised directions)."""
    angle = (np.degrees(np.arctan2(gy, gx)) + 180.0) % 180.0
    padded = np.pad(magnitude, 1)
    h, w = magnitude.shape

    def shifted(dy: int, dx: int) -> np.ndarray:
        return padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    # Neighbours along the gradient: 0 deg (left/right), 45, 90 (up/down), 135.
    horizontal = (angle < 22.5) | (angle >= 157.5)
    diagonal = (angle >= 22.5) & (angle < 67.5)
    vertical = (angle >= 67.5) & (angle < 112.5)
    anti = (angle >= 112.5) & (angle < 157.5)
    before = np.select(
        [horizontal, diagonal, vertical, anti],
        [shifted(0, -1), shifted(-1, -1), shifted(-1, 0), shifted(-1, 1)],
    )
    after = np.select(
        [horizontal, diagonal, vertical, anti],
        [shifted(0, 1), shifted(1, 1), shifted(1, 0), shifted(1, -1)],
    )
    peak = (magnitude >= before) & (magnitude >= after)
    return np.where(peak, magnitude, 0.0)


def _hysteresis(strong: np.ndarray, weak: np.ndarray) -> np.ndarray:
    """Grows the strong edges through 8-connected weak pixels until nothing changes."""
    edges = strong.copy()
    for _ in range(_MAX_HYSTERESIS_ROUNDS):
        grown = _dilate(edges) & weak
        if np.array_equal(grown, edges):
            break
        edges = grown | edges
    return edges


def _dilate(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1)
    h, w = mask.shape
    out = np.zeros_like(mask)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            out |= padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
    return out
