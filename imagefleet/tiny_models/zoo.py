"""Every tiny model kind written to one folder, for tests, benchmarks and demos.

``build_zoo(dest)`` writes the SD 1.5-shaped demo model and the SDXL-shaped base and refiner,
with LoRAs (both layouts), textual-inversion embeddings, standalone VAEs and ControlNets that
fit them, and returns their paths. Everything is deterministic for the seed and written with
safetensors only, so the files go through the registry, download, verification and caching
path like any real model's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imagefleet.demo_model import build_demo_pipeline
from imagefleet.tiny_models.controlnet import (
    build_controlnet,
    save_controlnet_folder,
    vae_downscale,
    write_controlnet_single_file,
)
from imagefleet.tiny_models.embedding import DEFAULT_TOKEN, write_embedding
from imagefleet.tiny_models.lora import write_lora
from imagefleet.tiny_models.sdxl import build_tiny_sdxl_pipeline, build_tiny_sdxl_refiner
from imagefleet.tiny_models.vae import build_vae_like, save_vae_folder, write_vae_single_file

EMBEDDING_TOKEN = DEFAULT_TOKEN


@dataclass(frozen=True)
class TinyZoo:
    sd15: Path  # diffusers folder of the demo model
    sd15_lora_peft: Path
    sd15_lora_kohya: Path  # the same weight change as sd15_lora_peft, kohya layout
    sd15_lora_other: Path  # a second, different LoRA (peft layout)
    sd15_embedding_a1111: Path
    sd15_embedding_diffusers: Path
    sd15_vae: Path  # diffusers folder
    sd15_vae_single: Path
    sd15_controlnet: Path  # diffusers folder, hint network matched to the demo VAE
    sd15_controlnet_single: Path | None  # only when the demo VAE downscales by 8
    sdxl: Path
    sdxl_refiner: Path
    sdxl_lora_peft: Path
    sdxl_lora_kohya: Path  # sgm (LDM) block names, as sd-scripts writes SDXL LoRAs
    sdxl_embedding: Path


def build_zoo(dest: Path, seed: int = 0) -> TinyZoo:
    """Writes every tiny model under dest (created) and returns where each one is."""
    dest.mkdir(parents=True, exist_ok=True)
    sd = build_demo_pipeline(seed)
    sd.save_pretrained(str(dest / "sd15"), safe_serialization=True)
    vae = build_vae_like(sd, seed + 100)
    controlnet = build_controlnet(sd, seed + 200)
    controlnet_single = None
    if vae_downscale(sd) == 8:
        controlnet_single = write_controlnet_single_file(
            controlnet, dest / "sd15-controlnet.safetensors"
        )
    xl = build_tiny_sdxl_pipeline(seed)
    xl.save_pretrained(str(dest / "sdxl"), safe_serialization=True)
    build_tiny_sdxl_refiner(seed).save_pretrained(
        str(dest / "sdxl-refiner"), safe_serialization=True
    )
    return TinyZoo(
        sd15=dest / "sd15",
        sd15_lora_peft=write_lora(
            sd, dest / "sd15-lora-peft.safetensors", layout="peft", seed=seed + 1
        ),
        sd15_lora_kohya=write_lora(
            sd, dest / "sd15-lora-kohya.safetensors", layout="kohya", seed=seed + 1
        ),
        sd15_lora_other=write_lora(
            sd, dest / "sd15-lora-other.safetensors", layout="peft", seed=seed + 2
        ),
        sd15_embedding_a1111=write_embedding(
            sd, dest / "sd15-embedding-a1111.safetensors", layout="a1111", seed=seed + 3
        ),
        sd15_embedding_diffusers=write_embedding(
            sd, dest / "sd15-embedding-diffusers.safetensors", layout="diffusers", seed=seed + 3
        ),
        sd15_vae=save_vae_folder(vae, dest / "sd15-vae"),
        sd15_vae_single=write_vae_single_file(vae, dest / "sd15-vae.safetensors"),
        sd15_controlnet=save_controlnet_folder(controlnet, dest / "sd15-controlnet"),
        sd15_controlnet_single=controlnet_single,
        sdxl=dest / "sdxl",
        sdxl_refiner=dest / "sdxl-refiner",
        sdxl_lora_peft=write_lora(
            xl, dest / "sdxl-lora-peft.safetensors", layout="peft", seed=seed + 1
        ),
        sdxl_lora_kohya=write_lora(
            xl, dest / "sdxl-lora-kohya.safetensors", layout="kohya", seed=seed + 1
        ),
        sdxl_embedding=write_embedding(
            xl, dest / "sdxl-embedding.safetensors", layout="sdxl", seed=seed + 3
        ),
    )
