"""The original one-file checkpoint layout that community model sites publish.

Civitai and A1111-style checkpoints keep every component of a Stable Diffusion model in one
file under the key names of the original latent-diffusion code ("LDM" or "CompVis" names):
``model.diffusion_model.*`` for the UNet, ``first_stage_model.*`` for the VAE and
``cond_stage_model.transformer.*`` (SD 1.x) or ``conditioner.embedders.*`` (SDXL) for the text
encoders. diffusers knows how to *read* that layout but not how to *write* it; the worker
needs to read it, and the tests need to write it to prove that reading works without
downloading a real multi-gigabyte checkpoint.

Only safetensors files are ever opened: a pickle checkpoint can run arbitrary code on load.
Heavy imports stay inside the functions that need them, so importing this module is cheap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from torch import Tensor

CheckpointFamily = Literal["sd", "sdxl"]
StateDict = dict[str, "Tensor"]

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."
SDXL_MARKER = "conditioner.embedders.1."

# Parts of a diffusers ResnetBlock2D whose names differ in the LDM UNet's ResBlock.
_UNET_RESNET_PARTS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}

# UNet tensors that sit outside the numbered blocks.
_UNET_FIXED = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}

# Parts of the VAE's single-head mid-block attention; LDM stores them as 1x1 convolutions.
_VAE_ATTENTION = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}
_VAE_CONV_ATTENTION = frozenset({"q", "k", "v", "proj_out"})


def checkpoint_family(path: Path) -> CheckpointFamily:
    """Tells SDXL from SD 1.x/2.x by key names alone, reading only the file's header.

    The pipelines that load the two families differ, and guessing wrong fails deep inside
    diffusers with an unhelpful shape error, so the caller asks first. A file without UNet
    weights (a LoRA, a bare VAE) or that is not safetensors at all is refused here with a
    ValueError, rather than half-loaded later.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
    except SafetensorError as error:
        raise ValueError(f"{path} is not a readable safetensors file: {error}") from error
    if not any(key.startswith(UNET_PREFIX) for key in keys):
        raise ValueError(f"{path} holds no {UNET_PREFIX}* weights: not a full checkpoint")
    return "sdxl" if any(key.startswith(SDXL_MARKER) for key in keys) else "sd"


def write_sd_checkpoint(
    unet: StateDict, vae: StateDict, text_encoder: StateDict, dest: Path
) -> Path:
    """Writes diffusers-layout SD 1.x component weights as one LDM-layout safetensors file."""
    from safetensors.torch import save_file

    merged: StateDict = {}
    for prefix, converted in (
        (UNET_PREFIX, unet_to_ldm(unet)),
        (VAE_PREFIX, vae_to_ldm(vae)),
        (CLIP_PREFIX, clip_to_ldm(text_encoder)),
    ):
        merged.update(
            {prefix + key: tensor.detach().contiguous() for key, tensor in converted.items()}
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file(merged, str(dest), metadata={"format": "pt"})
    return dest


def unet_to_ldm(state_dict: Mapping[str, Tensor]) -> StateDict:
    """Renames a diffusers UNet2DConditionModel state dict to the LDM UNetModel names.

    LDM numbers its blocks in one flat sequence (``input_blocks.N``, ``output_blocks.N``) where
    diffusers nests them (``down_blocks.B.resnets.L``); the flat index follows from the number
    of resnets per block, which is read from the keys themselves.
    """
    layout = _UNetLayout(
        layers=len(_child_indices(state_dict, "down_blocks.0.resnets.")),
        attended_up_blocks=_child_indices(state_dict, "up_blocks.", then="attentions"),
    )
    return {layout.ldm_key(key): tensor for key, tensor in state_dict.items()}


def vae_to_ldm(state_dict: Mapping[str, Tensor]) -> StateDict:
    """Renames a diffusers AutoencoderKL state dict to the LDM AutoencoderKL names.

    The LDM decoder numbers its up blocks from the lowest resolution upwards, the reverse of
    diffusers, and stores the mid-block attention projections as [C, C, 1, 1] convolutions.
    """
    up_blocks = len(_child_indices(state_dict, "decoder.up_blocks."))
    converted: StateDict = {}
    for key, tensor in state_dict.items():
        new_key = _vae_key(key, up_blocks)
        converted[new_key] = _as_conv_if_attention(new_key, tensor)
    return converted


def clip_to_ldm(state_dict: Mapping[str, Tensor]) -> StateDict:
    """Puts CLIPTextModel weights under the ``text_model.`` root that LDM files always use.

    Recent transformers releases dropped that root from CLIPTextModel's own state dict, older
    ones keep it; the file format must not depend on which one wrote it.
    """
    return {
        (key if key.startswith("text_model.") else f"text_model.{key}"): tensor
        for key, tensor in state_dict.items()
    }


@dataclass(frozen=True)
class _UNetLayout:
    """Where each nested diffusers UNet block lands in LDM's flat block lists."""

    layers: int  # resnets per down block; up blocks have one more
    attended_up_blocks: frozenset[int]

    def ldm_key(self, key: str) -> str:
        """Renames one UNet key; an unknown key is an error, never passed through.

        Passing it through would write a file that loads with silently random weights for
        whatever this converter was not written for (SDXL's extra embeddings, say).
        """
        module, _, leaf = key.rpartition(".")
        if module in _UNET_FIXED:
            return f"{_UNET_FIXED[module]}.{leaf}"
        match key.split("."):
            case ["down_blocks", block, "resnets", layer, *rest]:
                return f"input_blocks.{self._down(block, layer)}.0.{_unet_resnet_part(rest)}"
            case ["down_blocks", block, "attentions", layer, *rest]:
                return f"input_blocks.{self._down(block, layer)}.1.{_join(rest)}"
            case ["down_blocks", block, "downsamplers", "0", "conv", *rest]:
                return f"input_blocks.{(int(block) + 1) * (self.layers + 1)}.0.op.{_join(rest)}"
            case ["mid_block", "resnets", index, *rest]:
                return f"middle_block.{2 * int(index)}.{_unet_resnet_part(rest)}"
            case ["mid_block", "attentions", "0", *rest]:
                return f"middle_block.1.{_join(rest)}"
            case ["up_blocks", block, "resnets", layer, *rest]:
                return f"output_blocks.{self._up(block, layer)}.0.{_unet_resnet_part(rest)}"
            case ["up_blocks", block, "attentions", layer, *rest]:
                return f"output_blocks.{self._up(block, layer)}.1.{_join(rest)}"
            case ["up_blocks", block, "upsamplers", "0", "conv", *rest]:
                # The upsampler follows the block's last resnet, and its attention if any.
                slot = 2 if int(block) in self.attended_up_blocks else 1
                return f"output_blocks.{self._up(block, self.layers)}.{slot}.conv.{_join(rest)}"
        raise ValueError(f"cannot map UNet weight {key!r} to the LDM layout")

    def _down(self, block: str, layer: str) -> int:
        # input_blocks.0 is conv_in; each down block then takes its resnets plus a downsampler.
        return 1 + int(block) * (self.layers + 1) + int(layer)

    def _up(self, block: str | int, layer: str | int) -> int:
        return int(block) * (self.layers + 1) + int(layer)


def _vae_key(key: str, up_blocks: int) -> str:
    """Renames one AutoencoderKL key; ``up_blocks`` is the decoder's number of up blocks."""
    match key.split("."):
        case ["encoder", "down_blocks", block, "resnets", layer, *rest]:
            return f"encoder.down.{block}.block.{layer}.{_vae_resnet_part(rest)}"
        case ["encoder", "down_blocks", block, "downsamplers", "0", "conv", *rest]:
            return f"encoder.down.{block}.downsample.conv.{_join(rest)}"
        case ["decoder", "up_blocks", block, "resnets", layer, *rest]:
            ldm_block = up_blocks - 1 - int(block)
            return f"decoder.up.{ldm_block}.block.{layer}.{_vae_resnet_part(rest)}"
        case ["decoder", "up_blocks", block, "upsamplers", "0", "conv", *rest]:
            return f"decoder.up.{up_blocks - 1 - int(block)}.upsample.conv.{_join(rest)}"
        case [side, "mid_block", "resnets", index, *rest]:
            return f"{side}.mid.block_{int(index) + 1}.{_vae_resnet_part(rest)}"
        case [side, "mid_block", "attentions", "0", *part, leaf] if _join(part) in _VAE_ATTENTION:
            return f"{side}.mid.attn_1.{_VAE_ATTENTION[_join(part)]}.{leaf}"
        case [side, "conv_norm_out", leaf]:
            return f"{side}.norm_out.{leaf}"
        case ["encoder" | "decoder", "conv_in" | "conv_out", _] | [
            "quant_conv" | "post_quant_conv",
            _,
        ]:
            return key
    raise ValueError(f"cannot map VAE weight {key!r} to the LDM layout")


def _as_conv_if_attention(ldm_key: str, tensor: Tensor) -> Tensor:
    """Gives a mid-block attention projection weight the [C, C, 1, 1] shape LDM stores."""
    *_, part, leaf = ldm_key.split(".")
    if ".mid.attn_1." in ldm_key and part in _VAE_CONV_ATTENTION and leaf == "weight":
        return tensor.reshape(*tensor.shape, 1, 1)
    return tensor


def _unet_resnet_part(rest: list[str]) -> str:
    head, *tail = rest
    return _join([_UNET_RESNET_PARTS.get(head, head), *tail])


def _vae_resnet_part(rest: list[str]) -> str:
    head, *tail = rest
    return _join(["nin_shortcut" if head == "conv_shortcut" else head, *tail])


def _join(parts: list[str]) -> str:
    return ".".join(parts)


def _child_indices(state_dict: Mapping[str, Tensor], prefix: str, then: str = "") -> frozenset[int]:
    """The numbers that follow ``prefix`` in the keys (optionally only where ``then`` follows).

    This is how the block layout is read off a state dict, e.g. the resnets of one block.
    """
    found = set()
    for key in state_dict:
        if not key.startswith(prefix):
            continue
        index, _, rest = key[len(prefix) :].partition(".")
        if index.isdigit() and rest.startswith(then):
            found.add(int(index))
    if not found and not then:
        raise ValueError(f"no weights under {prefix!r}: not a Stable Diffusion component")
    return frozenset(found)
