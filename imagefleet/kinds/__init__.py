"""Job kinds as registered specs (see base.py). A new kind is one module here (or in a plug-in)
plus its registration line below; the worker side is one handler in imagefleet/worker/handlers.
"""

from __future__ import annotations

from imagefleet.kinds import (
    comfy,
    img2img,
    inpaint,
    preprocess,
    train_lora,
    txt2img,
    workflow,
)
from imagefleet.kinds.base import KindSpec, Limits, OutputSpec, Requirements, combo_key
from imagefleet.kinds.registry import (
    KindPluginError,
    all_kinds,
    get_kind,
    job_union,
    kind_names,
    load_plugins,
    register,
)

register(txt2img.SPEC)
register(img2img.SPEC)
register(inpaint.SPEC)
register(preprocess.SPEC)
register(train_lora.SPEC)
register(comfy.SPEC)
register(workflow.SPEC)

__all__ = [
    "KindPluginError",
    "KindSpec",
    "Limits",
    "OutputSpec",
    "Requirements",
    "all_kinds",
    "combo_key",
    "get_kind",
    "job_union",
    "kind_names",
    "load_plugins",
    "register",
]
