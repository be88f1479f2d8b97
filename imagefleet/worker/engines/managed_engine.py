"""The worker's default engine: every job's model combo through the model manager.

`DiffusersEngine` keeps one checkpoint resident and nothing else; this engine runs a job's whole
combo (checkpoint, LoRAs at their weights, a VAE, embeddings, a ControlNet) through
`ModelManager.prepare`: files leased from the disk cache, pipelines and components kept resident
within the device budget, per-job parts applied on top and undone after. What the engine
promises about images is the same as `DiffusersEngine`'s: exactly the requested size, image
``i`` from seed ``seed + i`` alone, progress after every denoising step, cancellation between
steps, A1111 prompt weights and prompts past 77 tokens (prompts.py), inpainting's pixels outside
the mask pasted back. The denoising loop and the VAE decode are timed apart (engines/generation).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from imagefleet.worker.engines.base import (
    GeneratedImage,
    GenerationCancelled,
    Img2ImgRequest,
    InpaintRequest,
    StepCallback,
    StopCheck,
)
from imagefleet.worker.engines.batched import check_batchable, generate_batched
from imagefleet.worker.engines.combo_job import ComboJob, HiresPass
from imagefleet.worker.engines.components import for_task
from imagefleet.worker.engines.compositing import paste_unmasked
from imagefleet.worker.engines.generation import RefinerPass, generate
from imagefleet.worker.engines.model_manager import ModelManager, PreparedCombo
from imagefleet.worker.engines.pass_progress import PassProgress, planned_passes
from imagefleet.worker.engines.prompts import prompt_embeddings
from imagefleet.worker.engines.schedulers import scheduler_spec, seed_scheduler

if TYPE_CHECKING:
    from PIL import Image

    from imagefleet.worker.model_cache import ModelCache

KINDS = ("txt2img", "img2img", "inpaint")


class ManagedEngine:
    """Generation with model combos; the model manager is bound to the worker's disk cache."""

    supports_combos = True

    def __init__(self, device: str | None = None, *, cache: ModelCache | None = None) -> None:
        """device None: CUDA with float16 when available, else CPU with float32."""
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self._device = torch.device(device)
        self._manager: ModelManager | None = None
        self.kinds = KINDS
        if cache is not None:
            self.bind_cache(cache)

    def bind_cache(self, cache: ModelCache) -> None:
        """Uses this disk cache for the job's files (the worker passes its own)."""
        if self._manager is None or self._manager.cache.root != cache.root:
            self._manager = ModelManager(cache, device=str(self._device))

    @property
    def manager(self) -> ModelManager:
        if self._manager is None:
            raise RuntimeError("the engine has no disk cache: call bind_cache() first")
        return self._manager

    @property
    def device(self) -> str:
        return str(self._device)

    @property
    def vram_mb(self) -> int:
        """The GPU's memory (0 on a CPU), sent with claims."""
        if self._device.type != "cuda":
            return 0
        return int(torch.cuda.get_device_properties(self._device).total_memory // 2**20)

    @staticmethod
    def is_out_of_memory(exc: BaseException) -> bool:
        return isinstance(exc, torch.cuda.OutOfMemoryError)

    @property
    def resident_model(self) -> str | None:
        """The most recently used resident checkpoint's sha256 (what single-model engines
        report); `resident_models` lists everything."""
        if self._manager is None:
            return None
        checkpoints = [k for k in self._manager.pool.resident() if k.startswith("checkpoint:")]
        return checkpoints[-1].split(":", 1)[1] if checkpoints else None

    def resident_models(self) -> list[str]:
        return [] if self._manager is None else self._manager.resident_models()

    def resident_combos(self) -> list[str]:
        return [] if self._manager is None else self._manager.resident_combos()

    def generate(
        self, job: ComboJob, on_step: StepCallback, should_stop: StopCheck
    ) -> list[GeneratedImage]:
        """Makes the request's images with the job's combo; see the module docstring."""
        if should_stop():
            raise GenerationCancelled("cancelled before the models were prepared")
        with self.manager.prepare(
            job.models, task=job.task, clock=job.clock, combo=job.combo_key
        ) as ready:
            extra = self._task_arguments(job, ready)
            with _scheduler_for(ready.pipeline, job.request.scheduler):
                images = self._generate_all(job, ready, extra, on_step, should_stop)
        if isinstance(job.request, InpaintRequest):
            size = (job.request.width, job.request.height)
            init = job.request.init_image.convert("RGB").resize(size)
            mask = job.request.mask.convert("L").resize(size)
            images = [
                GeneratedImage(
                    paste_unmasked(out.image, init, mask, job.request.mask_blur), out.seed
                )
                for out in images
            ]
        return images

    def generate_batch(
        self, jobs: Sequence[ComboJob], on_step: StepCallback, should_stop: StopCheck
    ) -> list[list[GeneratedImage]]:
        """Several compatible jobs' images in one denoising call (engines/batched.py); each
        image as it would be alone. ValueError when the jobs cannot share a call."""
        check_batchable(jobs)
        if should_stop():
            raise GenerationCancelled("cancelled before the models were prepared")
        first = jobs[0]
        with (
            self.manager.prepare(
                first.models, task=first.task, clock=first.clock, combo=first.combo_key
            ) as ready,
            _scheduler_for(ready.pipeline, first.request.scheduler),
        ):
            return generate_batched(ready, jobs, self._device, on_step, should_stop)

    def _task_arguments(self, job: ComboJob, ready: PreparedCombo) -> dict[str, Any]:
        """The pipeline arguments of the task beyond prompt, steps, guidance and seed."""
        request = job.request
        size = (request.width, request.height)
        extra: dict[str, Any] = {}
        if isinstance(request, Img2ImgRequest):
            extra["image"] = request.init_image.convert("RGB").resize(size)
            extra["strength"] = request.strength
        if isinstance(request, InpaintRequest):
            extra["mask_image"] = request.mask.convert("L").resize(size)
        if job.task != "img2img":
            extra.update(width=request.width, height=request.height)
        if ready.controlnet_scale is not None or _has_controlnet(ready.pipeline):
            control = job.options.control_image
            if control is None:
                raise ValueError("the job names a ControlNet but gives no control image")
            control = control.convert("RGB").resize(size)
            extra["image" if job.task == "txt2img" else "control_image"] = control
            scale = 1.0 if ready.controlnet_scale is None else ready.controlnet_scale
            extra["controlnet_conditioning_scale"] = scale
        elif job.options.control_image is not None:
            raise ValueError("the job gives a control image but names no ControlNet")
        return extra

    def _generate_all(
        self,
        job: ComboJob,
        ready: PreparedCombo,
        extra: dict[str, Any],
        on_step: StepCallback,
        should_stop: StopCheck,
    ) -> list[GeneratedImage]:
        request, pipeline, options = job.request, ready.pipeline, job.options
        prompt = _with_trigger_tokens(pipeline, request.prompt)
        negative = (
            None
            if request.negative_prompt is None
            else _with_trigger_tokens(pipeline, request.negative_prompt)
        )
        embeddings = prompt_embeddings(pipeline, prompt, negative, options.clip_skip)
        refiner_embeddings: dict[str, Any] = {}
        if ready.refiner is not None:
            if not ready.is_sdxl:
                raise ValueError("a refiner runs after an SDXL base; this checkpoint is not SDXL")
            refiner_embeddings = prompt_embeddings(ready.refiner, prompt, negative)
        hires = None if options.hires is None else for_task(pipeline, "img2img")
        progress = PassProgress(
            on_step,
            should_stop,
            planned_passes(
                request.steps,
                request.num_images,
                refiner_switch=options.refiner_switch,
                refiner_steps=options.refiner_steps,
                has_refiner=ready.refiner is not None,
                hires_steps=None if options.hires is None else options.hires.steps,
            ),
        )
        results = []
        for index in range(request.num_images):
            if should_stop():
                raise GenerationCancelled(f"cancelled before image {index}")
            seed = request.seed + index
            seed_scheduler(pipeline.scheduler, seed)
            reporter = progress.callback()
            call = {
                **embeddings,
                "num_inference_steps": request.steps,
                "guidance_scale": request.guidance_scale,
                "generator": torch.Generator(device=self._device).manual_seed(seed),
                "callback_on_step_end": reporter,
                **extra,
            }
            refiner = None
            if ready.refiner is not None:
                seed_scheduler(ready.refiner.scheduler, seed)
                refiner = RefinerPass(
                    ready.refiner,
                    switch=options.refiner_switch,
                    steps=options.refiner_steps,
                    arguments={**refiner_embeddings, "callback_on_step_end": progress.callback()},
                )
            image = generate(pipeline, call, job.clock, refiner=refiner)[0]
            if hires is not None and options.hires is not None:
                image = self._hires(hires, options.hires, image, call, seed, job, progress)
            results.append(GeneratedImage(image=image, seed=seed))
        return results

    def _hires(
        self,
        pipeline: Any,
        hires: HiresPass,
        image: Image.Image,
        call: dict[str, Any],
        seed: int,
        job: ComboJob,
        progress: PassProgress,
    ) -> Image.Image:
        """The hires fix's second pass: Lanczos upscale, then image-to-image at that size."""
        from PIL import Image

        size = (hires.width, hires.height)
        big = image.resize(size, Image.Resampling.LANCZOS)
        dropped = ("width", "height", "image", "mask_image")
        second = {k: v for k, v in call.items() if k not in dropped}
        # img2img runs strength x num_inference_steps steps: ask for enough to run `steps`.
        second.update(
            image=big,
            strength=hires.strength,
            num_inference_steps=max(hires.steps, round(hires.steps / hires.strength)),
            generator=torch.Generator(device=self._device).manual_seed(seed),
            callback_on_step_end=progress.callback(),
        )
        if "control_image" in second or _has_controlnet(pipeline):
            control = job.options.control_image
            assert control is not None  # checked in _task_arguments
            second["control_image"] = control.convert("RGB").resize(size)
        seed_scheduler(pipeline.scheduler, seed)
        return generate(pipeline, second, job.clock)[0]


def _has_controlnet(pipeline: Any) -> bool:
    return getattr(pipeline, "controlnet", None) is not None


# Each resident scheduler's derived samplers, built once (from_config costs ~10 ms a job on a
# CPU): a scheduler is reset by `set_timesteps` at the start of every call, which is how
# diffusers itself reuses one across calls. Gone with the resident scheduler.
_BUILT_SCHEDULERS: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


@contextmanager
def _scheduler_for(pipeline: Any, name: str) -> Iterator[None]:
    """The job's sampler on the pipeline for the block, built from the resident scheduler's
    config; the resident one is put back after, so no job inherits another's sampler."""
    original = pipeline.scheduler
    built = _BUILT_SCHEDULERS.setdefault(original, {})
    if name not in built:
        built[name] = scheduler_spec(name).build(dict(original.config))
    pipeline.scheduler = built[name]
    try:
        yield
    finally:
        pipeline.scheduler = original


def _with_trigger_tokens(pipeline: Any, prompt: str) -> str:
    """Expands each multi-vector embedding's trigger word into its tokens (``tok tok_1 ...``),
    as diffusers does for prompts it encodes itself; prompts.py encodes them here instead."""
    convert = getattr(pipeline, "maybe_convert_prompt", None)
    if convert is None:
        return prompt
    converted: str = convert(prompt, pipeline.tokenizer)
    return converted
