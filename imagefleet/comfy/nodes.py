"""What a ComfyUI node type declares: its inputs (links and widgets), outputs and how many
images it passes on. Torch-free: the orchestrator validates graphs against these specs at
submit, `GET /object_info` describes them, and the worker pairs each with its implementation.

Names, input names, types, defaults and bounds follow ComfyUI's own node definitions, so that a
workflow exported with "Save (API)" from ComfyUI validates here unchanged. Link types are
ComfyUI's type words (MODEL, CLIP, VAE, CONDITIONING, LATENT, IMAGE, MASK, CONTROL_NET);
widget types are INT, FLOAT, STRING, BOOLEAN or a fixed list of choices (COMBO).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from imagefleet.comfy.samplers import COMFY_SAMPLERS, COMFY_SCHEDULERS

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
MAX_RESOLUTION = 16384
MAX_SEED = 0xFFFFFFFFFFFFFFFF


@dataclass(frozen=True)
class InputSpec:
    """One input of a node: a link of `type`, or a widget value (INT, FLOAT, STRING, BOOLEAN,
    COMBO with `choices`). `model_kind` marks a loader's model name (resolved at submit like any
    job's models); `uploaded_image` marks LoadImage's file name, an uploaded input's id here."""

    name: str
    type: str
    required: bool = True
    default: Any = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    choices: tuple[str, ...] = ()
    multiline: bool = False
    model_kind: str | None = None
    uploaded_image: bool = False

    @property
    def is_widget(self) -> bool:
        return self.type in WIDGET_TYPES

    def object_info(self) -> list[Any]:
        """ComfyUI's `[type, options]` pair (a COMBO's type is its list of choices)."""
        options: dict[str, Any] = {}
        for key in ("default", "min", "max", "step"):
            if (value := getattr(self, key)) is not None:
                options[key] = value
        if self.multiline:
            options["multiline"] = True
        if self.uploaded_image:
            options["image_upload"] = True
        head: Any = list(self.choices) if self.type == "COMBO" else self.type
        return [head, options] if options else [head]


@dataclass(frozen=True)
class NodeSpec:
    """One node type. `batch_widget` / `batch_input` say where its output batch size comes
    from (EmptyLatentImage's batch_size; the images a VAEDecode decodes), so the number of
    images a graph saves is known at submit; neither means a batch of one."""

    name: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
    output_node: bool = False
    category: str = ""
    display_name: str = ""
    description: str = ""
    batch_widget: str | None = None
    batch_input: str | None = None
    saves_images: str | None = None  # the input whose images an output node writes
    output_type: str = "output"  # where ComfyUI files them: output, or temp for previews
    size_widgets: tuple[str, str] | None = None  # (width, height) widgets in pixels
    extra: dict[str, Any] = field(default_factory=dict)

    def input(self, name: str) -> InputSpec | None:
        return next((spec for spec in self.inputs if spec.name == name), None)

    def object_info(self) -> dict[str, Any]:
        """This node as ComfyUI's `GET /object_info` describes one."""
        required = {i.name: i.object_info() for i in self.inputs if i.required}
        optional = {i.name: i.object_info() for i in self.inputs if not i.required}
        described: dict[str, Any] = {"required": required}
        if optional:
            described["optional"] = optional
        return {
            "input": described,
            "input_order": {
                "required": list(required),
                **({"optional": list(optional)} if optional else {}),
            },
            "output": list(self.outputs),
            "output_is_list": [False] * len(self.outputs),
            "output_name": list(self.output_names or self.outputs),
            "name": self.name,
            "display_name": self.display_name or self.name,
            "description": self.description,
            "python_module": "imagefleet",
            "category": self.category,
            "output_node": self.output_node,
        }


def _link(name: str, type_: str, required: bool = True) -> InputSpec:
    return InputSpec(name, type_, required=required)


def _int(name: str, default: int, low: int, high: int, step: int = 1) -> InputSpec:
    return InputSpec(name, "INT", default=default, min=low, max=high, step=step)


def _float(name: str, default: float, low: float, high: float, step: float = 0.01) -> InputSpec:
    return InputSpec(name, "FLOAT", default=default, min=low, max=high, step=step)


def _combo(name: str, choices: tuple[str, ...], default: str | None = None) -> InputSpec:
    return InputSpec(name, "COMBO", choices=choices, default=default or choices[0])


def _model(name: str, kind: str) -> InputSpec:
    return InputSpec(name, "COMBO", model_kind=kind)


_SIDE = {"low": 16, "high": MAX_RESOLUTION, "step": 8}
_UPSCALE = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")
_LATENT_UPSCALE = ("nearest-exact", "bilinear", "area", "bicubic", "bislerp")
_CROP = ("disabled", "center")
_SAMPLING = (
    _int("steps", 20, 1, 10000),
    _float("cfg", 8.0, 0.0, 100.0, 0.1),
    _combo("sampler_name", COMFY_SAMPLERS),
    _combo("scheduler", COMFY_SCHEDULERS),
    _link("positive", "CONDITIONING"),
    _link("negative", "CONDITIONING"),
    _link("latent_image", "LATENT"),
)

BUILTIN_SPECS: tuple[NodeSpec, ...] = (
    NodeSpec(
        "CheckpointLoaderSimple",
        (_model("ckpt_name", "checkpoint"),),
        ("MODEL", "CLIP", "VAE"),
        category="loaders",
        display_name="Load Checkpoint",
    ),
    NodeSpec(
        "CLIPTextEncode",
        (InputSpec("text", "STRING", multiline=True, default=""), _link("clip", "CLIP")),
        ("CONDITIONING",),
        category="conditioning",
        display_name="CLIP Text Encode (Prompt)",
    ),
    NodeSpec(
        "CLIPSetLastLayer",
        # ComfyUI allows -24..-1; the prompt encoder here reads the last or the penultimate.
        (_link("clip", "CLIP"), _int("stop_at_clip_layer", -1, -2, -1)),
        ("CLIP",),
        category="conditioning",
    ),
    NodeSpec(
        "EmptyLatentImage",
        (
            _int("width", 512, **_SIDE),
            _int("height", 512, **_SIDE),
            _int("batch_size", 1, 1, 64),
        ),
        ("LATENT",),
        category="latent",
        batch_widget="batch_size",
        size_widgets=("width", "height"),
    ),
    NodeSpec(
        "KSampler",
        (
            _link("model", "MODEL"),
            _int("seed", 0, 0, MAX_SEED),
            *_SAMPLING,
            _float("denoise", 1.0, 0.0, 1.0),
        ),
        ("LATENT",),
        category="sampling",
        batch_input="latent_image",
    ),
    NodeSpec(
        "KSamplerAdvanced",
        (
            _link("model", "MODEL"),
            _combo("add_noise", ("enable", "disable")),
            _int("noise_seed", 0, 0, MAX_SEED),
            *_SAMPLING,
            _int("start_at_step", 0, 0, 10000),
            _int("end_at_step", 10000, 0, 10000),
            _combo("return_with_leftover_noise", ("disable", "enable")),
        ),
        ("LATENT",),
        category="sampling",
        batch_input="latent_image",
    ),
    NodeSpec(
        "VAEDecode",
        (_link("samples", "LATENT"), _link("vae", "VAE")),
        ("IMAGE",),
        category="latent",
        batch_input="samples",
    ),
    NodeSpec(
        "VAEEncode",
        (_link("pixels", "IMAGE"), _link("vae", "VAE")),
        ("LATENT",),
        category="latent",
        batch_input="pixels",
    ),
    NodeSpec("VAELoader", (_model("vae_name", "vae"),), ("VAE",), category="loaders"),
    NodeSpec(
        "LoraLoader",
        (
            _link("model", "MODEL"),
            _link("clip", "CLIP"),
            _model("lora_name", "lora"),
            _float("strength_model", 1.0, -100.0, 100.0),
            _float("strength_clip", 1.0, -100.0, 100.0),
        ),
        ("MODEL", "CLIP"),
        category="loaders",
    ),
    NodeSpec(
        "ControlNetLoader",
        (_model("control_net_name", "controlnet"),),
        ("CONTROL_NET",),
        category="loaders",
    ),
    NodeSpec(
        "ControlNetApply",
        (
            _link("conditioning", "CONDITIONING"),
            _link("control_net", "CONTROL_NET"),
            _link("image", "IMAGE"),
            _float("strength", 1.0, 0.0, 10.0),
        ),
        ("CONDITIONING",),
        category="conditioning/controlnet",
    ),
    NodeSpec(
        "ControlNetApplyAdvanced",
        (
            _link("positive", "CONDITIONING"),
            _link("negative", "CONDITIONING"),
            _link("control_net", "CONTROL_NET"),
            _link("image", "IMAGE"),
            _float("strength", 1.0, 0.0, 10.0),
            _float("start_percent", 0.0, 0.0, 1.0, 0.001),
            _float("end_percent", 1.0, 0.0, 1.0, 0.001),
            _link("vae", "VAE", required=False),
        ),
        ("CONDITIONING", "CONDITIONING"),
        ("positive", "negative"),
        category="conditioning/controlnet",
    ),
    NodeSpec(
        "LoadImage",
        (InputSpec("image", "COMBO", uploaded_image=True),),
        ("IMAGE", "MASK"),
        category="image",
    ),
    NodeSpec(
        "LoadImageMask",
        (
            InputSpec("image", "COMBO", uploaded_image=True),
            _combo("channel", ("alpha", "red", "green", "blue")),
        ),
        ("MASK",),
        category="mask",
    ),
    NodeSpec(
        "SetLatentNoiseMask",
        (_link("samples", "LATENT"), _link("mask", "MASK")),
        ("LATENT",),
        category="latent/inpaint",
        batch_input="samples",
    ),
    NodeSpec(
        "ImageScale",
        (
            _link("image", "IMAGE"),
            _combo("upscale_method", _UPSCALE),
            _int("width", 512, 0, MAX_RESOLUTION),
            _int("height", 512, 0, MAX_RESOLUTION),
            _combo("crop", _CROP),
        ),
        ("IMAGE",),
        category="image/upscaling",
        batch_input="image",
        size_widgets=("width", "height"),
    ),
    NodeSpec(
        "LatentUpscale",
        (
            _link("samples", "LATENT"),
            _combo("upscale_method", _LATENT_UPSCALE),
            _int("width", 512, 0, MAX_RESOLUTION, 8),
            _int("height", 512, 0, MAX_RESOLUTION, 8),
            _combo("crop", _CROP),
        ),
        ("LATENT",),
        category="latent",
        batch_input="samples",
        size_widgets=("width", "height"),
    ),
    NodeSpec(
        "SaveImage",
        (_link("images", "IMAGE"), InputSpec("filename_prefix", "STRING", default="ComfyUI")),
        output_node=True,
        category="image",
        saves_images="images",
    ),
    NodeSpec(
        "PreviewImage",
        (_link("images", "IMAGE"),),
        output_node=True,
        category="image",
        saves_images="images",
        output_type="temp",
    ),
)
