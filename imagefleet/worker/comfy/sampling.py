"""KSampler and KSamplerAdvanced: ComfyUI's denoising loop on a diffusers UNet and scheduler.

A graph's sampler takes any latent (empty, encoded from an image, upscaled, masked) and a
conditioning that may carry ControlNets, which no single diffusers pipeline call expresses,
so the loop is spelled out here: the scheduler named by ComfyUI's sampler and scheduler names
(imagefleet/comfy/samplers.py) built from the checkpoint's config, noise from the seed on the
CPU (as ComfyUI draws it, so a seed means the same noise on any device), classifier-free
guidance with the positive and negative conditionings batched when their shapes agree, each
ControlNet's residuals added while the step is inside its span, and a noise mask that keeps
the unmasked area on the original latents (re-noised to the current step).

`denoise` < 1 runs the last `steps` of a schedule of `steps / denoise` steps, which is how
ComfyUI (and diffusers' img2img) start part-way from an encoded image.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from imagefleet.comfy.samplers import scheduler_options
from imagefleet.worker.comfy.values import Conditioning, Control, Latent, ModelHandle


@dataclass(frozen=True)
class SamplerCall:
    seed: int
    steps: int
    cfg: float
    sampler: str
    scheduler: str
    denoise: float = 1.0
    start: int = 0
    end: int | None = None
    add_noise: bool = True
    force_full_denoise: bool = True


def build_scheduler(model: ModelHandle, sampler: str, schedule: str) -> Any:
    import diffusers

    class_name, options = scheduler_options(sampler, schedule)
    cls = getattr(diffusers, class_name)
    accepted = set(inspect.signature(cls.__init__).parameters)
    return cls.from_config(
        model.scheduler_config, **{k: v for k, v in options.items() if k in accepted}
    )


def sample(
    model: ModelHandle,
    positive: Conditioning,
    negative: Conditioning,
    latent: Latent,
    call: SamplerCall,
    on_step: Callable[[], None],
) -> Latent:
    """The latent after the call's steps; `on_step` runs after each (and may raise to stop)."""
    if call.denoise <= 0.0:
        return latent
    unet = model.unet
    device, dtype = unet.device, unet.dtype
    scheduler = build_scheduler(model, call.sampler, call.scheduler)
    if call.denoise < 1.0:
        total = max(call.steps, int(call.steps / call.denoise))
        first, last = total - call.steps, total
    else:
        total = call.steps
        first, last = call.start, min(call.end if call.end is not None else total, total)
    scheduler.set_timesteps(total, device=device)
    order = scheduler.order
    timesteps = scheduler.timesteps[first * order : last * order]
    if len(timesteps) == 0:
        return latent
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(first * order)
    original = latent.samples.to(device=device, dtype=dtype)
    noise = torch.randn(
        original.shape, generator=torch.Generator("cpu").manual_seed(call.seed), dtype=torch.float32
    ).to(device=device, dtype=dtype)
    if not call.add_noise:
        x = original
    elif first == 0 and not bool(original.any()):
        x = noise * scheduler.init_noise_sigma
    else:
        x = scheduler.add_noise(original, noise, timesteps[:1])
    mask = _latent_mask(latent, original)
    step_kwargs = _step_kwargs(scheduler, call.seed)
    guide = _Guidance(model, positive, negative, call.cfg, original)
    early = last < total and call.force_full_denoise
    with torch.inference_mode():
        for index, t in enumerate(timesteps):
            fraction = (first + index / order) / total
            model_input = scheduler.scale_model_input(x, t)
            prediction = guide(model_input, t, fraction)
            out = scheduler.step(prediction, t, x, **step_kwargs, return_dict=True)
            x = out.prev_sample
            final = index == len(timesteps) - 1
            if final and early and getattr(out, "pred_original_sample", None) is not None:
                x = out.pred_original_sample
            if mask is not None:
                kept = (
                    original
                    if final
                    else scheduler.add_noise(original, noise, timesteps[index + 1 : index + 2])
                )
                x = mask * x + (1.0 - mask) * kept
            if (index + 1) % order == 0 or final:
                on_step()
    return Latent(samples=x, noise_mask=latent.noise_mask)


def steps_of(call: SamplerCall) -> int:
    """How many progress steps the call reports."""
    if call.denoise <= 0.0:
        return 0
    if call.denoise < 1.0:
        return call.steps
    end = call.end if call.end is not None else call.steps
    return max(0, min(end, call.steps) - call.start)


def _step_kwargs(scheduler: Any, seed: int) -> dict[str, Any]:
    """A generator for the samplers that draw noise at each step (ancestral, SDE)."""
    accepted = set(inspect.signature(scheduler.step).parameters)
    kwargs: dict[str, Any] = {}
    if "generator" in accepted:
        kwargs["generator"] = torch.Generator("cpu").manual_seed(seed + 1)
    if hasattr(scheduler, "noise_sampler_seed"):
        scheduler.noise_sampler_seed = seed
    return kwargs


def _latent_mask(latent: Latent, samples: torch.Tensor) -> torch.Tensor | None:
    if latent.noise_mask is None:
        return None
    mask = latent.noise_mask.to(device=samples.device, dtype=samples.dtype)
    mask = torch.nn.functional.interpolate(mask, size=samples.shape[-2:], mode="bilinear")
    if mask.shape[0] != samples.shape[0]:
        mask = mask[:1].expand(samples.shape[0], -1, -1, -1)
    return mask


class _Guidance:
    """The UNet's classifier-free-guided prediction for one step, ControlNets included."""

    def __init__(
        self,
        model: ModelHandle,
        positive: Conditioning,
        negative: Conditioning,
        cfg: float,
        latents: torch.Tensor,
    ) -> None:
        self.model, self.positive, self.negative, self.cfg = model, positive, negative, cfg
        self.batch = latents.shape[0]
        self.height, self.width = latents.shape[-2:]
        scale = 2 ** (len(model.pipeline.vae.config.block_out_channels) - 1)
        self.pixel_size = (self.height * scale, self.width * scale)
        self.hints: dict[int, torch.Tensor] = {}

    def __call__(self, x: torch.Tensor, t: Any, fraction: float) -> torch.Tensor:
        if self.cfg == 1.0:
            return self._predict(x, t, fraction, [self.positive])
        pair = [self.negative, self.positive]
        if self.positive.embeds.shape == self.negative.embeds.shape:
            both = self._predict(torch.cat([x, x]), t, fraction, pair)
            uncond, cond = both.chunk(2)
        else:
            uncond = self._predict(x, t, fraction, [self.negative])
            cond = self._predict(x, t, fraction, [self.positive])
        return uncond + self.cfg * (cond - uncond)

    def _predict(
        self, x: torch.Tensor, t: Any, fraction: float, conds: list[Conditioning]
    ) -> torch.Tensor:
        unet = self.model.unet
        embeds = torch.cat(
            [c.embeds.to(x.device, x.dtype).expand(self.batch, -1, -1) for c in conds]
        )
        extra: dict[str, Any] = {}
        if self.model.is_sdxl:
            extra["added_cond_kwargs"] = self._sdxl_kwargs(conds, x)
        residuals = self._control(x, t, fraction, conds, embeds, extra)
        if residuals is not None:
            extra["down_block_additional_residuals"] = residuals[0]
            extra["mid_block_additional_residual"] = residuals[1]
        return unet(x, t, encoder_hidden_states=embeds, return_dict=False, **extra)[0]

    def _sdxl_kwargs(self, conds: list[Conditioning], x: torch.Tensor) -> dict[str, Any]:
        pooled = []
        for c in conds:
            if c.pooled is None:
                raise ValueError("an SDXL sampler needs conditioning from an SDXL text encoder")
            pooled.append(c.pooled.to(x.device, x.dtype).expand(self.batch, -1))
        h, w = self.pixel_size
        time_ids = torch.tensor([[h, w, 0, 0, h, w]], device=x.device, dtype=x.dtype)
        return {"text_embeds": torch.cat(pooled), "time_ids": time_ids.expand(x.shape[0], -1)}

    def _control(
        self,
        x: torch.Tensor,
        t: Any,
        fraction: float,
        conds: list[Conditioning],
        embeds: torch.Tensor,
        extra: dict[str, Any],
    ) -> tuple[list[torch.Tensor], torch.Tensor] | None:
        """Each conditioning's ControlNet residuals on its share of the batch (zeros where a
        conditioning has none active), summed over its ControlNets."""
        active = [[c for c in cond.controls if c.start <= fraction <= c.end] for cond in conds]
        if not any(active):
            return None
        per_cond: list[tuple[list[torch.Tensor], torch.Tensor] | None] = []
        for part, controls in enumerate(active):
            rows = slice(part * self.batch, (part + 1) * self.batch)
            total: tuple[list[torch.Tensor], torch.Tensor] | None = None
            for control in controls:
                kwargs = {}
                if "added_cond_kwargs" in extra:
                    kwargs["added_cond_kwargs"] = {
                        k: v[rows] for k, v in extra["added_cond_kwargs"].items()
                    }
                down, mid = control.controlnet(
                    x[rows],
                    t,
                    encoder_hidden_states=embeds[rows],
                    controlnet_cond=self._hint(control, x),
                    conditioning_scale=control.strength,
                    return_dict=False,
                    **kwargs,
                )
                total = (
                    (list(down), mid)
                    if total is None
                    else ([a + b for a, b in zip(total[0], down, strict=True)], total[1] + mid)
                )
            per_cond.append(total)
        template = next(r for r in per_cond if r is not None)
        filled = [
            r
            if r is not None
            else ([torch.zeros_like(d) for d in template[0]], torch.zeros_like(template[1]))
            for r in per_cond
        ]
        downs = [torch.cat(parts) for parts in zip(*(r[0] for r in filled), strict=True)]
        return downs, torch.cat([r[1] for r in filled])

    def _hint(self, control: Control, x: torch.Tensor) -> torch.Tensor:
        """The hint image at the latents' pixel size, [batch, 3, H, W] in 0..1."""
        key = id(control)
        hint = self.hints.get(key)
        if hint is None:
            image = control.image.movedim(-1, 1).to(device=x.device, dtype=x.dtype)[:, :3]
            image = torch.nn.functional.interpolate(image, size=self.pixel_size, mode="bilinear")
            if image.shape[0] != self.batch:
                image = image[:1].expand(self.batch, -1, -1, -1)
            hint = self.hints[key] = image
        return hint
