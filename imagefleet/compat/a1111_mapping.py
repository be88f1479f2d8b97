"""Pure translations between AUTOMATIC1111's request words and imagefleet's: LoRAs written in
the prompt, sampler + scheduler names, model titles, and the `info` JSON of a result."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from imagefleet.errors import InvalidField
from imagefleet.samplers import SAMPLER_NAMES, Sampler, resolve_sampler

# `<lora:name>` or `<lora:name:weight>`, as the web UI's extra-networks syntax writes them.
LORA_TAG = re.compile(r"<lora:([^:<>]+?)(?::(-?[0-9]*\.?[0-9]+))?>", re.IGNORECASE)
# Schedulers (A1111 >= 1.9 names them apart from samplers) that we can honour.
SCHEDULERS = {"automatic": "Automatic", "karras": "Karras"}
DEFAULT_SAMPLER = Sampler.euler_ancestral  # the web UI's default, "Euler a"


@dataclass(frozen=True)
class PromptLoras:
    prompt: str
    loras: list[dict[str, Any]]


def split_loras(prompt: str) -> PromptLoras:
    """Takes the `<lora:name:weight>` tags out of a prompt: they become the job's LoRAs (weight
    1 when absent); the rest of the prompt is kept, its spacing tidied."""
    loras = [
        {"name": match.group(1).strip(), "weight": float(match.group(2) or 1.0)}
        for match in LORA_TAG.finditer(prompt)
    ]
    text = re.sub(r"\s{2,}", " ", LORA_TAG.sub("", prompt)).strip(" ,")
    return PromptLoras(text, loras)


def sampler_for(sampler_name: str | None, scheduler: str | None, loc: tuple[str, ...]) -> str:
    """Our sampler for an A1111 sampler label ("DPM++ 2M") and scheduler ("karras")."""
    sampler = resolve_sampler(sampler_name) if sampler_name else DEFAULT_SAMPLER
    if sampler is None:
        raise InvalidField(
            (*loc, "sampler_name"),
            f"unknown sampler {sampler_name!r}; GET /sdapi/v1/samplers lists the supported ones",
        )
    chosen = (scheduler or "automatic").strip().lower()
    if chosen not in SCHEDULERS:
        raise InvalidField(
            (*loc, "scheduler"),
            f"scheduler {scheduler!r} is not supported; use one of {sorted(SCHEDULERS)}",
        )
    if chosen == "karras" and not sampler.value.endswith("_karras"):
        karras = resolve_sampler(f"{SAMPLER_NAMES[sampler].label} Karras")
        if karras is None:
            raise InvalidField(
                (*loc, "scheduler"), f"sampler {sampler_name!r} has no Karras variant here"
            )
        sampler = karras
    return sampler.value


def model_name(title: str) -> str:
    """A model reference from an A1111 checkpoint title: `demo@2 [0123abcd]`, `demo.safetensors`
    or `demo` all name model `demo` (the version when given)."""
    name = re.sub(r"\s*\[[0-9a-fA-F]+\]\s*$", "", title).strip()
    for suffix in (".safetensors", ".ckpt"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name


def model_title(name: str, version: int, sha256: str) -> str:
    return f"{name}@{version} [{sha256[:10]}]"


def round_side(value: int) -> int:
    """A1111 accepts any size and works on the latent grid: down to a multiple of 8."""
    return max(8, value // 8 * 8)


def info_json(request: dict[str, Any], seeds: list[int], model: str, sha256: str) -> str:
    """The `info` string of a txt2img/img2img answer, with the keys clients read."""
    prompt = request.get("prompt", "")
    count = len(seeds)
    return json.dumps(
        {
            "prompt": prompt,
            "all_prompts": [prompt] * count,
            "negative_prompt": request.get("negative_prompt", ""),
            "all_negative_prompts": [request.get("negative_prompt", "")] * count,
            "seed": seeds[0] if seeds else -1,
            "all_seeds": seeds,
            "subseed": -1,
            "all_subseeds": [-1] * count,
            "subseed_strength": 0,
            "width": request.get("width"),
            "height": request.get("height"),
            "sampler_name": request.get("sampler_name"),
            "cfg_scale": request.get("cfg_scale"),
            "steps": request.get("steps"),
            "batch_size": request.get("batch_size"),
            "restore_faces": False,
            "sd_model_name": model,
            "sd_model_hash": sha256[:10],
            "denoising_strength": request.get("denoising_strength"),
            "index_of_first_image": 0,
            "infotexts": [],
            "styles": [],
            "clip_skip": 1,
            "is_using_inpainting_conditioning": False,
            "version": "imagefleet",
        }
    )
