"""Checking uploaded images before anything else touches them (torch-free, orchestrator side).

An input is decoded fully once at upload, so a truncated or malicious file is refused with a
422 at the API, never discovered by a worker mid-job; Pillow's decompression-bomb guard is
replaced by our own pixel limit, which is checked from the header before decoding.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


@dataclass(frozen=True)
class ImageInfo:
    content_type: str
    width: int
    height: int


class InvalidImage(ValueError):
    """Not an image this service takes; the message says why."""


def inspect_image(data: bytes, *, max_pixels: int) -> ImageInfo:
    """The image's type and size; InvalidImage when it is not a whole PNG, JPEG or WebP image
    within the pixel limit."""
    if not data:
        raise InvalidImage("the upload is empty")
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind = FORMATS.get(image.format or "")
            if kind is None:
                raise InvalidImage(
                    f"{image.format or 'this'} images are not accepted; send PNG, JPEG or WebP"
                )
            width, height = image.size
            if width * height > max_pixels:
                raise InvalidImage(
                    f"the image is {width}x{height} = {width * height} pixels, over the limit "
                    f"of {max_pixels}"
                )
            if getattr(image, "n_frames", 1) > 1:
                raise InvalidImage("animated images are not accepted; send a single frame")
            image.load()  # decodes everything: truncated files fail here
    except InvalidImage:
        raise
    except Image.DecompressionBombError as exc:
        raise InvalidImage(f"the image is too large to decode ({exc})") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(f"not a decodable PNG, JPEG or WebP image ({exc})") from exc
    return ImageInfo(kind, width, height)
