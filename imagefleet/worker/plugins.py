"""Pre- and post-processing plug-ins around generation: prompt rewriting before, a safety
filter after.

A **prompt rewriter** (e.g. a translator, so that prompts in any language reach an English-only
text encoder without a paid translation API) has ``rewrite(prompt) -> str``; it is applied to the
prompt and the negative prompt of every generation job on the worker. A **safety filter** has
``is_unsafe(image) -> bool``; it runs on each image of a job that asks for it
(``"safety_filter": true``); an unsafe image is replaced by a black one of the same size and its
PNG metadata records ``"safety_filtered": true`` (false for images that passed).

Plug-ins are operator options, ``module.path:ClassName`` in ``IMAGEFLEET_WORKER_PROMPT_REWRITER``
and ``IMAGEFLEET_WORKER_SAFETY_FILTER``: importing one runs its code, so they are never taken
from a job. No classifier ships with imagefleet (a real one, such as a CLIP-based NSFW
classifier, is installed by the operator); a job that asks for the filter on a worker without one
fails retryably, so a worker that has one can take it.
"""

from __future__ import annotations

import functools
import importlib
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from PIL import Image


class PromptRewriter(Protocol):
    def rewrite(self, prompt: str) -> str: ...


class SafetyFilter(Protocol):
    def is_unsafe(self, image: Image.Image) -> bool: ...


class PluginError(RuntimeError):
    """A configured plug-in cannot be loaded, or a job needs one this worker lacks."""


@functools.cache
def load_plugin(spec: str, member: str) -> Any:
    """``module.path:ClassName`` built with no arguments; it must have ``member``."""
    module_name, colon, class_name = spec.strip().partition(":")
    if not colon or not module_name or not class_name:
        raise PluginError(f"plug-in {spec!r}: expected 'module.path:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(f"plug-in {spec!r} cannot be imported: {exc}") from exc
    factory = getattr(module, class_name, None)
    if not callable(factory):
        raise PluginError(f"plug-in {spec!r}: {module_name} has no {class_name!r}")
    plugin = factory()
    if not callable(getattr(plugin, member, None)):
        raise PluginError(f"plug-in {spec!r} has no {member}() method")
    return plugin


def rewriter(spec: str) -> PromptRewriter | None:
    if not spec:
        return None
    found: PromptRewriter = load_plugin(spec, "rewrite")
    return found


def safety_filter(spec: str) -> SafetyFilter:
    if not spec:
        raise PluginError(
            "the job asks for the safety filter, but this worker has none "
            "(IMAGEFLEET_WORKER_SAFETY_FILTER)"
        )
    found: SafetyFilter = load_plugin(spec, "is_unsafe")
    return found


def filtered(image: Image.Image, check: SafetyFilter) -> tuple[Image.Image, bool]:
    """The image, or a black one of its size when the filter finds it unsafe; and which."""
    from PIL import Image

    if check.is_unsafe(image):
        return Image.new("RGB", image.size, (0, 0, 0)), True
    return image, False
