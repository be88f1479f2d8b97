"""A tiny Stable-Diffusion-1.5-shaped model with random weights, for tests and demos.

Real checkpoints are gigabytes and cannot be downloaded in tests, yet the worker must be tested on
real pipelines, not mocks. This builds a genuine diffusers ``StableDiffusionPipeline`` with the
SD 1.5 architecture shrunk to 2 MB on disk: every code path (tokenizer, text encoder, UNet
with cross-attention, VAE, scheduler, both file layouts) runs for real, fast, on a CPU. The
images are noise, but they are deterministic noise, which is what the tests compare.

Heavy libraries are imported inside the functions so that importing this module stays cheap.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

# diffusers classes are imported from their defining modules throughout: type checkers
# resolve the package root's lazy re-exports to placeholder classes.
if TYPE_CHECKING:
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
        StableDiffusionPipeline,
    )
    from diffusers.schedulers.scheduling_ddim import DDIMScheduler
    from transformers import CLIPTextModel, CLIPTokenizer

TEXT_WIDTH = 32
LATENT_CHANNELS = 4
NORM_GROUPS = 8
# Four levels, three downsamplings: 2**3 = 8, the scale factor of every SD 1.5 and SDXL VAE.
# The decoder's top level runs at full image size, so it gets the fewest channels.
VAE_CHANNELS = (4, 8, 16, 16)
VAE_NORM_GROUPS = 4
VAE_SCALE_FACTOR = 2 ** (len(VAE_CHANNELS) - 1)
TEXT_VOCAB_SIZE = 1000
MAX_PROMPT_TOKENS = 77
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
WORD_END = "</w>"

# Words that get whole-word merges so that ordinary prompts produce more than single bytes.
_MERGED_WORDS = (
    *("photo", "portrait", "landscape", "painting", "astronaut", "sunset", "city"),
    *("of", "the", "on", "in", "cat", "dog", "red", "blue", "high", "quality", "detailed"),
)


def build_demo_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """Builds the tiny pipeline in memory; the same seed always gives the same weights.

    The generator is reseeded before each component so that changing one component's shape
    does not silently change the weights of the others.
    """
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
        StableDiffusionPipeline,
    )

    tokenizer = _build_tokenizer()
    # Untyped on purpose: diffusers annotates the scheduler as an enum and the optional
    # safety components as required, though it documents and accepts exactly these values.
    components: dict[str, Any] = {
        "vae": _build_vae(seed),
        "text_encoder": _build_text_encoder(seed, tokenizer),
        "tokenizer": tokenizer,
        "unet": _build_unet(seed),
        "scheduler": _build_scheduler(),
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }
    return StableDiffusionPipeline(**components)


def save_demo_model(dest: Path, seed: int = 0) -> Path:
    """Writes the pipeline in diffusers layout (save_pretrained, safetensors) into dest.

    Returns dest, so that a fixture can save and use the path in one expression.
    """
    build_demo_pipeline(seed).save_pretrained(str(dest), safe_serialization=True)
    return dest


def export_single_file(pipeline_dir: Path, dest_file: Path) -> Path:
    """Writes the pipeline at pipeline_dir as ONE original-layout .safetensors file; returns it.

    The file uses the LDM ("CompVis") key names that Civitai/A1111 checkpoints use:
    ``model.diffusion_model.*``, ``first_stage_model.*``, ``cond_stage_model.transformer.*``,
    so diffusers' ``from_single_file`` reads it like any downloaded community checkpoint.

    Loading back needs the pipeline directory as ``config``: the file carries weights only,
    and the tiny architecture cannot be guessed from key names the way SD 1.5's can.
    """
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from transformers import CLIPTextModel

    from imagefleet.worker.engines.single_file import write_sd_checkpoint

    unet = UNet2DConditionModel.from_pretrained(
        pipeline_dir, subfolder="unet", use_safetensors=True
    )
    vae = AutoencoderKL.from_pretrained(pipeline_dir, subfolder="vae", use_safetensors=True)
    text_encoder = CLIPTextModel.from_pretrained(
        pipeline_dir / "text_encoder", use_safetensors=True
    )
    return write_sd_checkpoint(
        unet.state_dict(), vae.state_dict(), text_encoder.state_dict(), dest_file
    )


def _build_unet(seed: int) -> UNet2DConditionModel:
    """SD 1.5's UNet parts (resnets, cross-attention transformers, skip connections) at tiny width.

    Three resolutions, with attention only at the innermost one: the latents are as large as
    SD 1.5's (the VAE downscales by 8), and self-attention over a 576x1024 image's 9,216 latent
    positions would cost seconds a step on a CPU, so it runs on the 576 of the innermost level.
    """
    import torch
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=64,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=2,
        norm_num_groups=NORM_GROUPS,
    )


def _build_vae(seed: int) -> AutoencoderKL:
    """SD 1.5's VAE layout (four levels, a mid-block attention) at tiny width: it downscales by
    8 like every real checkpoint, so a 512x512 image is a 64x64 latent, as in production."""
    import torch
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=VAE_CHANNELS,
        down_block_types=("DownEncoderBlock2D",) * len(VAE_CHANNELS),
        up_block_types=("UpDecoderBlock2D",) * len(VAE_CHANNELS),
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=VAE_NORM_GROUPS,
        sample_size=512,
    )


def _build_text_encoder(seed: int, tokenizer: CLIPTokenizer) -> CLIPTextModel:
    """A two-layer CLIP text model whose special token ids agree with the tokenizer's."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        hidden_size=TEXT_WIDTH,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=TEXT_VOCAB_SIZE,
        max_position_embeddings=MAX_PROMPT_TOKENS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return CLIPTextModel(config)


def _build_scheduler() -> DDIMScheduler:
    """DDIM with the noise schedule SD 1.5 ships with, so scheduler swaps behave as on SD 1.5."""
    from diffusers.schedulers.scheduling_ddim import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def _build_tokenizer() -> CLIPTokenizer:
    """A CLIP byte-level BPE tokenizer over a small vocabulary that still covers every byte.

    Loading from vocab.json/merges.txt files is the one construction path that both the old
    Python tokenizer and the newer tokenizers-backed one accept.
    """
    from transformers import CLIPTokenizer

    vocab, merges = _tokenizer_vocab()
    if len(vocab) > TEXT_VOCAB_SIZE:
        raise AssertionError(f"vocabulary of {len(vocab)} outgrew the text encoder's table")
    with tempfile.TemporaryDirectory(prefix="imagefleet-demo-tokenizer-") as tmp:
        folder = Path(tmp)
        (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        merge_lines = [f"{left} {right}" for left, right in merges]
        (folder / "merges.txt").write_text(
            "\n".join(["#version: 0.2", *merge_lines]) + "\n", encoding="utf-8"
        )
        return CLIPTokenizer.from_pretrained(str(folder), model_max_length=MAX_PROMPT_TOKENS)


def _tokenizer_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Every byte symbol alone and word-final, whole-word merges, then the special tokens."""
    symbols = _byte_symbols()
    merges = _word_merges(_MERGED_WORDS)
    tokens = [*symbols, *(s + WORD_END for s in symbols), *(a + b for a, b in merges)]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {token: index for index, token in enumerate(tokens)}, merges


def _word_merges(words: tuple[str, ...]) -> list[tuple[str, str]]:
    """Left-to-right merges that assemble each word from its letters, without repeats."""
    merges: list[tuple[str, str]] = []
    for word in words:
        parts = [*word[:-1], word[-1] + WORD_END]
        while len(parts) > 1:
            pair = (parts[0], parts[1])
            if pair not in merges:
                merges.append(pair)
            parts = [pair[0] + pair[1], *parts[2:]]
    return merges


def _byte_symbols() -> list[str]:
    """The printable character byte-level BPE uses for each byte value, in byte order.

    Bytes that are already visible characters stand for themselves; the rest (controls,
    space, a few Latin-1 gaps) are shifted past 255 so that no symbol is whitespace.
    """
    visible = {*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)}
    symbols: list[str] = []
    shifted = 0
    for byte in range(256):
        if byte in visible:
            symbols.append(chr(byte))
        else:
            symbols.append(chr(256 + shifted))
            shifted += 1
    return symbols
