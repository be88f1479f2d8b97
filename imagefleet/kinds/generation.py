"""What txt2img, img2img and inpaint share: the prompt, the model combo (checkpoint, LoRAs,
VAE, textual-inversion embeddings), the sampler, seeds, and their admission checks."""

from __future__ import annotations

import secrets
from typing import Any

from pydantic import Field, field_validator, model_validator

from imagefleet.errors import InvalidField
from imagefleet.kinds.base import InputNeed, Limits, Loc, ModelNeed, OutputSpec, check_side
from imagefleet.protocol import MAX_SEED, RANDOM_SEED, ModelRole, ModelUse, SchedulerName, Strict
from imagefleet.samplers import Sampler, resolve_sampler

PARAMS_LOC: Loc = ("body", "params")


class LoraUse(ModelUse):
    """A LoRA of the combo and how strongly it applies."""

    weight: float = Field(1.0, ge=-10.0, le=10.0, description="Server limits may be tighter.")


class ControlNetUse(ModelUse):
    """A ControlNet of the combo, the image that conditions it, and how strongly it steers."""

    image: str = Field(
        min_length=1,
        max_length=64,
        pattern="^[0-9a-f]+$",
        description="The id of an uploaded input (POST /v1/inputs): the control image, e.g. "
        "an edge map; resized to the output size.",
    )
    weight: float = Field(1.0, ge=0.0, le=2.0, description="The conditioning scale.")


class HiresFix(Strict):
    """A second, image-to-image pass at a larger size: upscaled, then refined."""

    scale: float = Field(2.0, gt=1.0, le=4.0, description="Output size over the base size.")
    steps: int = Field(10, ge=1, le=150, description="Denoising steps of the second pass.")
    strength: float = Field(0.5, gt=0.0, le=1.0, description="How much the pass may change.")


class GenerationParams(Strict):
    """The part of every image-generation kind's params that is about the image and models."""

    prompt: str = Field(min_length=1, max_length=4000)
    negative_prompt: str | None = Field(None, max_length=4000)
    model: ModelUse = Field(description='A checkpoint: "name", "name@version" or an object.')
    loras: list[LoraUse] = Field(default_factory=list, max_length=32)
    vae: ModelUse | None = Field(None, description="Replaces the checkpoint's own VAE.")
    embeddings: list[ModelUse] = Field(
        default_factory=list, max_length=32, description="Textual-inversion embeddings."
    )
    steps: int = Field(30, ge=1, le=150)
    guidance_scale: float = Field(7.0, ge=0.0, le=50.0)
    seed: int | None = Field(
        None, ge=0, le=MAX_SEED, description="Random when absent or -1 (as in A1111)."
    )
    num_images: int = Field(1, ge=1, le=8)
    scheduler: SchedulerName = Field(
        Sampler.dpmpp_2m,
        description="A sampler's API name; its A1111 label (`DPM++ 2M Karras`) is accepted too.",
    )

    controlnet: ControlNetUse | None = Field(
        None, description="Steers the image with a control image (e.g. edges or depth)."
    )
    refiner: ModelUse | None = Field(
        None, description="An SDXL refiner checkpoint that finishes the base's latents."
    )
    refiner_steps: int | None = Field(
        None,
        ge=1,
        le=150,
        description="Refiner steps after a complete base run (e.g. base 20 + refiner 15).",
    )
    refiner_switch: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="Or: the share of the schedule the base runs before the refiner takes "
        "over (default 0.8).",
    )
    clip_skip: int | None = Field(
        None, ge=1, le=2, description="A1111's clip skip: 2 reads CLIP's penultimate layer."
    )
    hires: HiresFix | None = Field(None, description="Hires fix: upscale and refine.")
    safety_filter: bool = Field(
        False,
        description="Run the worker's safety filter: an unsafe image comes back black, and "
        "its PNG metadata says safety_filtered.",
    )

    @model_validator(mode="after")
    def _refiner_fields(self) -> Any:
        if self.refiner is None and (
            self.refiner_steps is not None or self.refiner_switch is not None
        ):
            raise ValueError("refiner_steps and refiner_switch need a refiner")
        if self.refiner_steps is not None and self.refiner_switch is not None:
            raise ValueError("give refiner_steps or refiner_switch, not both")
        return self

    @field_validator("seed", mode="before")
    @classmethod
    def _minus_one_is_random(cls, value: Any) -> Any:
        return None if type(value) is int and value == RANDOM_SEED else value

    @field_validator("scheduler", mode="before")
    @classmethod
    def _sampler_spellings(cls, value: Any) -> Any:
        """A1111 labels ("Euler a") and aliases mean their sampler; the API name is stored."""
        if isinstance(value, str) and (sampler := resolve_sampler(value)) is not None:
            return sampler
        return value


def multiple_of_eight(value: int | None) -> int | None:
    """Sides on the latent grid of every SD model (the schema says multipleOf 8)."""
    if value is not None and value % 8:
        raise ValueError(f"must be a multiple of 8, got {value}")
    return value


def admit_generation(params: Any, limits: Limits, width: int, height: int) -> Any:
    """Checks the size and the combo against the server's limits; fixes the seed."""
    check_side(width, "width", limits, (*PARAMS_LOC, "width"))
    check_side(height, "height", limits, (*PARAMS_LOC, "height"))
    if width * height > limits.max_pixels:
        raise InvalidField(
            (*PARAMS_LOC, "width"),
            f"width*height must be at most {limits.max_pixels} pixels, got "
            f"{width}x{height}={width * height}",
        )
    if len(params.loras) > limits.max_loras:
        raise InvalidField(
            (*PARAMS_LOC, "loras"),
            f"at most {limits.max_loras} LoRAs per job, got {len(params.loras)}",
        )
    for index, lora in enumerate(params.loras):
        if not limits.lora_weight_min <= lora.weight <= limits.lora_weight_max:
            raise InvalidField(
                (*PARAMS_LOC, "loras", index, "weight"),
                f"LoRA weight must be between {limits.lora_weight_min} and "
                f"{limits.lora_weight_max}, got {lora.weight}",
            )
    if len(params.embeddings) > limits.max_embeddings:
        raise InvalidField(
            (*PARAMS_LOC, "embeddings"),
            f"at most {limits.max_embeddings} embeddings per job, got {len(params.embeddings)}",
        )
    if params.hires is not None:
        big_width, big_height = hires_size(width, height, params.hires.scale)
        if big_width * big_height > limits.max_pixels or max(big_width, big_height) > (
            limits.max_side
        ):
            raise InvalidField(
                (*PARAMS_LOC, "hires", "scale"),
                f"the hires pass would be {big_width}x{big_height}, beyond this server's "
                f"limits ({limits.max_side} per side, {limits.max_pixels} pixels)",
            )
    if params.seed is None:
        params = params.model_copy(update={"seed": secrets.randbelow(MAX_SEED + 1)})
    return params


def hires_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The hires pass's size: scaled, down to the latent grid."""
    return int(width * scale) // 8 * 8, int(height * scale) // 8 * 8


def combo_needs(params: Any) -> tuple[ModelNeed, ...]:
    """The models of a generation job by role, with where each was named."""
    needs = [ModelNeed(ModelRole.checkpoint, params.model, (*PARAMS_LOC, "model"))]
    needs += [
        ModelNeed(ModelRole.lora, lora, (*PARAMS_LOC, "loras", i), weight=lora.weight)
        for i, lora in enumerate(params.loras)
    ]
    if params.vae is not None:
        needs.append(ModelNeed(ModelRole.vae, params.vae, (*PARAMS_LOC, "vae")))
    needs += [
        ModelNeed(ModelRole.embedding, use, (*PARAMS_LOC, "embeddings", i))
        for i, use in enumerate(params.embeddings)
    ]
    if params.refiner is not None:
        needs.append(ModelNeed(ModelRole.refiner, params.refiner, (*PARAMS_LOC, "refiner")))
    if params.controlnet is not None:
        needs.append(
            ModelNeed(
                ModelRole.controlnet,
                params.controlnet,
                (*PARAMS_LOC, "controlnet"),
                weight=params.controlnet.weight,
            )
        )
    return tuple(needs)


def control_inputs(params: Any) -> tuple[InputNeed, ...]:
    """The ControlNet's control image, an input of the job like an init image."""
    if params.controlnet is None:
        return ()
    loc = (*PARAMS_LOC, "controlnet", "image")
    return (InputNeed("control_image", params.controlnet.image, loc),)


def cost_units(width: int, height: int, steps: float, images: int) -> float:
    """Megapixel-steps: the work of a generation, comparable across kinds and sizes."""
    return width * height * steps * images / 1e6


def image_outputs(params: Any) -> OutputSpec:
    return OutputSpec(count=params.num_images)
