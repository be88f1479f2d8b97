"""Reading what a model file is without loading it (no torch): the safetensors header's tensor
names tell a checkpoint's family and a LoRA's layout, model_index.json a diffusers folder's."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from imagefleet.protocol import ModelBase

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
MAX_HEADER_BYTES = 100 << 20


def safetensors_keys(path: Path) -> list[str]:
    """The tensor names in a .safetensors file (its JSON header); ValueError if it is not one."""
    with path.open("rb") as handle:
        raw = handle.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path.name} is not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", raw)
        if length > MAX_HEADER_BYTES:
            raise ValueError(f"{path.name} is not a safetensors file (header of {length} bytes)")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path.name} is not a safetensors file: {exc}") from exc
    if not isinstance(header, dict):
        raise ValueError(f"{path.name} is not a safetensors file (header is not an object)")
    return [key for key in header if key != "__metadata__"]


def detect_base(path: Path) -> ModelBase | None:
    """sd15 or sdxl when the layout says so; None when it cannot tell."""
    if path.is_dir():
        index = path / "model_index.json"
        if index.is_file():
            name = str(json.loads(index.read_text()).get("_class_name", ""))
            return ModelBase.sdxl if "XL" in name else ModelBase.sd15
        unet_config = path / "config.json"
        if unet_config.is_file():  # a standalone component (VAE, ControlNet)
            config = json.loads(unet_config.read_text())
            if config.get("addition_embed_type") == "text_time":
                return ModelBase.sdxl
        return None
    if path.suffix.lower() != ".safetensors":
        return None
    keys = safetensors_keys(path)
    text = "\n".join(keys[:5000])
    if "conditioner.embedders.1." in text or "lora_te2_" in text or "text_encoder_2" in text:
        return ModelBase.sdxl
    if "add_embedding" in text or "label_emb" in text:
        return ModelBase.sdxl
    if keys:
        return ModelBase.sd15
    return None


def detect_format(path: Path, kind: str) -> str:
    """How the files are laid out: diffusers (a folder), single_file, kohya or peft (LoRAs)."""
    if path.is_dir():
        return "diffusers"
    if kind == "lora":
        keys = safetensors_keys(path)
        return "kohya" if any(k.startswith(("lora_unet_", "lora_te")) for k in keys) else "peft"
    return "single_file"
