"""Tiny random LoRAs for SD 1.5- and SDXL-shaped pipelines, in the two layouts found in the wild.

Community LoRAs come in two layouts that the worker must both load:

- **diffusers/peft**: ``unet.<module>.lora_A.weight`` / ``lora_B.weight`` and
  ``text_encoder.text_model.<module>...`` (and ``text_encoder_2.`` on SDXL), as written by
  diffusers' training scripts and ``save_lora_weights``; the scale is alpha/rank with alpha equal
  to the rank unless metadata says otherwise.
- **kohya** (sd-scripts, most Civitai files): ``lora_unet_<module_with_underscores>.lora_down
  .weight`` / ``lora_up.weight`` / ``.alpha``, text encoders as ``lora_te_`` (SD 1.5) or
  ``lora_te1_`` / ``lora_te2_`` (SDXL). sd-scripts trains SD 1.5 on diffusers' UNet but SDXL on
  the original ("sgm") UNet, so SDXL UNet modules carry LDM block names (``input_blocks_4_1_...``).

Both layouts are written from the same random factors, with the kohya file storing alpha =
rank/2 and a doubled up matrix: the two files describe the same weight change, so a test can
check that both loaders agree and that ``.alpha`` is honoured. Only attention projections are
adapted, as most published LoRAs do.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from imagefleet.worker.engines.single_file import unet_to_ldm

if TYPE_CHECKING:
    from torch import Tensor, nn

LoraLayout = Literal["peft", "kohya"]
UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
DEFAULT_RANK = 4
DEFAULT_STRENGTH = 0.5


@dataclass(frozen=True)
class LoraFactor:
    """One adapted linear layer: delta W = up @ down (at scale alpha/rank = 1)."""

    component: str  # "unet", "text_encoder" or "text_encoder_2"
    module: str  # the module's name inside its component
    down: Tensor  # [rank, in_features]
    up: Tensor  # [out_features, rank]


def lora_factors(
    pipeline: Any,
    *,
    seed: int,
    rank: int = DEFAULT_RANK,
    strength: float = DEFAULT_STRENGTH,
    text_encoders: bool = True,
) -> list[LoraFactor]:
    """Random factors for every attention projection of the pipeline's UNet and text encoders.

    Deterministic for (architecture, seed, rank, strength); the base weights' values do not
    matter. ``strength`` sets the size of the change relative to a layer's input: about
    ``strength`` times its norm, enough to visibly change a tiny model's image.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    components = ["unet"]
    if text_encoders:
        components += [
            name for name in ("text_encoder", "text_encoder_2") if getattr(pipeline, name, None)
        ]
    factors = []
    for component in components:
        for name, layer in _targets(getattr(pipeline, component), component):
            down = torch.randn(rank, layer.in_features, generator=generator)
            up = torch.randn(layer.out_features, rank, generator=generator)
            factors.append(
                LoraFactor(
                    component=component,
                    module=name,
                    down=down / layer.in_features**0.5,
                    up=up * (strength / rank**0.5),
                )
            )
    return factors


def write_lora(
    pipeline: Any,
    dest: Path,
    *,
    layout: LoraLayout,
    seed: int,
    rank: int = DEFAULT_RANK,
    strength: float = DEFAULT_STRENGTH,
    text_encoders: bool = True,
) -> Path:
    """Writes a random LoRA for the pipeline's architecture as one .safetensors file; returns it."""
    from safetensors.torch import save_file

    factors = lora_factors(
        pipeline, seed=seed, rank=rank, strength=strength, text_encoders=text_encoders
    )
    if layout == "peft":
        tensors = peft_state_dict(factors)
    else:
        tensors = kohya_state_dict(factors, sgm_names=_is_sdxl(pipeline), unet=pipeline.unet)
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dest), metadata={"format": "pt"})
    return dest


def peft_state_dict(factors: list[LoraFactor]) -> dict[str, Tensor]:
    """The diffusers/peft layout; text encoder keys keep the ``text_model.`` root real files use."""
    tensors = {}
    for factor in factors:
        prefix = f"{factor.component}.{_text_model_root(factor)}{factor.module}"
        tensors[f"{prefix}.lora_A.weight"] = factor.down.contiguous()
        tensors[f"{prefix}.lora_B.weight"] = factor.up.contiguous()
    return tensors


def kohya_state_dict(
    factors: list[LoraFactor], *, sgm_names: bool, unet: nn.Module
) -> dict[str, Tensor]:
    """The kohya layout, with alpha = rank/2 stored and the up matrix doubled to match."""
    import torch

    sgm = _sgm_module_names(unet) if sgm_names else {}
    te_prefixes = (
        {"text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}
        if sgm_names
        else {"text_encoder": "lora_te_"}
    )
    tensors = {}
    for factor in factors:
        if factor.component == "unet":
            name = "lora_unet_" + sgm.get(factor.module, factor.module).replace(".", "_")
        else:
            module = _text_model_root(factor) + factor.module
            name = te_prefixes[factor.component] + module.replace(".", "_")
        rank = factor.down.shape[0]
        tensors[f"{name}.lora_down.weight"] = factor.down.contiguous()
        tensors[f"{name}.lora_up.weight"] = (factor.up * 2).contiguous()
        tensors[f"{name}.alpha"] = torch.tensor(rank / 2)
    return tensors


def _targets(model: nn.Module, component: str) -> Iterator[tuple[str, nn.Linear]]:
    """The attention projections a LoRA adapts, in a fixed (name) order."""
    from torch import nn

    suffixes = UNET_TARGETS if component == "unet" else TEXT_TARGETS
    endings = tuple(f".{suffix}" for suffix in suffixes)
    for name, module in sorted(model.named_modules(), key=lambda item: item[0]):
        if isinstance(module, nn.Linear) and name.endswith(endings):
            yield name, module


def _text_model_root(factor: LoraFactor) -> str:
    """Recent transformers flattened CLIPTextModel (no ``text_model.``); files still have it."""
    if factor.component == "unet" or factor.module.startswith("text_model."):
        return ""
    return "text_model."


def _is_sdxl(pipeline: Any) -> bool:
    return getattr(pipeline, "text_encoder_2", None) is not None


def _sgm_module_names(unet: nn.Module) -> dict[str, str]:
    """diffusers UNet module name -> the original (sgm/LDM) name, read off the UNet's blocks."""
    blocks = {
        key: value
        for key, value in unet.state_dict().items()
        if key.startswith(("down_blocks.", "mid_block.", "up_blocks."))
    }
    mapping = {}
    for diffusers_key, ldm_key in zip(blocks, unet_to_ldm(blocks), strict=True):
        mapping[diffusers_key.rpartition(".")[0]] = ldm_key.rpartition(".")[0]
    return mapping
