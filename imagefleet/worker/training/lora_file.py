"""The trained LoRA as the single .safetensors file that diffusers' load_lora_weights reads.

The file is diffusers' own LoRA layout (``unet.*`` and ``text_encoder.*`` keys, and for SDXL
``text_encoder_2.*``, written by ``StableDiffusionPipeline.save_lora_weights`` or
``StableDiffusionXLPipeline.save_lora_weights``) with the adapters' LoraConfig in its header, so
an alpha other than the rank survives loading. Our own facts (base model sha256, rank, alpha,
trigger words...) are added to the same header under ``imagefleet.*`` keys: the file describes
itself wherever it is copied, and the registry can read them back with `read_lora_metadata`.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline
from diffusers.utils.state_dict_utils import convert_state_dict_to_diffusers
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import save_file

from imagefleet.worker.training.types import LoraMetadata

DIFFUSERS_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
METADATA_PREFIX = "imagefleet."
ADAPTER = "default"
# The text encoders each pipeline's save_lora_weights takes, by component name.
_TEXT_ENCODERS = ("text_encoder",)
_TEXT_ENCODERS_XL = ("text_encoder", "text_encoder_2")


def export_lora(
    unet: torch.nn.Module,
    text_encoders: Sequence[tuple[str, torch.nn.Module]],
    metadata: LoraMetadata,
    dest: Path,
    *,
    sdxl: bool = False,
) -> Path:
    """Writes the adapters of ``unet`` and of the trained ``text_encoders`` (by component name:
    ``text_encoder``, and for SDXL ``text_encoder_2``; none when they were frozen) to ``dest``.
    ``sdxl`` writes it as StableDiffusionXLPipeline does (same key layout for the UNet and the
    first text encoder, ``text_encoder_2.*`` keys for the second)."""
    # Typed loosely: diffusers annotates these arguments narrower than what it accepts.
    arguments: dict[str, Any] = {
        "unet_lora_layers": _layers(unet),
        "unet_lora_adapter_metadata": _adapter_config(unet),
    }
    for name, encoder in text_encoders:
        if name not in (_TEXT_ENCODERS_XL if sdxl else _TEXT_ENCODERS):
            raise ValueError(f"no LoRA layout for a text encoder named {name!r}")
        arguments[f"{name}_lora_layers"] = _layers(encoder)
        arguments[f"{name}_lora_adapter_metadata"] = _adapter_config(encoder)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".lora-") as tmp:
        writer: Any = StableDiffusionPipeline
        if sdxl:
            from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import (
                StableDiffusionXLPipeline,
            )

            writer = StableDiffusionXLPipeline
        writer.save_lora_weights(tmp, safe_serialization=True, **arguments)
        written = Path(tmp) / DIFFUSERS_WEIGHT_NAME
        with safe_open(str(written), framework="pt") as handle:
            header = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    header.update(_header(metadata))
    save_file(tensors, str(dest), metadata=header)
    return dest


def read_lora_metadata(path: Path) -> LoraMetadata:
    """The ``imagefleet.*`` facts from a file written by `export_lora`."""
    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata() or {}
    try:
        values = {
            key[len(METADATA_PREFIX) :]: json.loads(value)
            for key, value in header.items()
            if key.startswith(METADATA_PREFIX)
        }
        return LoraMetadata(**values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path} carries no readable imagefleet LoRA metadata: {exc}") from None


def _layers(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(module, adapter_name=ADAPTER))
    return {
        key: value.detach().to("cpu", torch.float32).contiguous() for key, value in state.items()
    }


def _adapter_config(module: torch.nn.Module) -> dict[str, Any]:
    configs = cast(dict[str, LoraConfig], module.peft_config)
    config: dict[str, Any] = configs[ADAPTER].to_dict()
    config["base_model_name_or_path"] = None  # a path on the training worker: meaningless elsewhere
    return config


def _header(metadata: LoraMetadata) -> dict[str, str]:
    """safetensors headers hold strings only: every value is stored as JSON."""
    return {METADATA_PREFIX + key: json.dumps(value) for key, value in vars(metadata).items()}
