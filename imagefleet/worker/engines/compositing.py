"""Pasting the init image back outside an inpainting mask (Pillow only, no torch)."""

from __future__ import annotations

from PIL import Image, ImageFilter


def paste_unmasked(
    generated: Image.Image, init: Image.Image, mask: Image.Image, blur: int
) -> Image.Image:
    """`generated` where the mask is white, `init` where it is black, blended across the edge
    by a Gaussian blur of `blur` pixels (A1111's "mask blur"). Pixels farther than about three
    blur radii from the mask are exactly the init image's."""
    soft = mask.convert("L")
    if blur:
        soft = soft.filter(ImageFilter.GaussianBlur(blur))
    return Image.composite(generated.convert("RGB"), init.convert("RGB"), soft)
