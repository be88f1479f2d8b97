"""Runs real diffusers pipelines for the worker: one resident model, one request at a time.

A worker GPU holds one checkpoint at a time (SD models are several gigabytes), so the engine
keeps exactly one pipeline loaded and swaps it when a job needs another model. Everything the
orchestrator promises about a job is enforced here: images come out at exactly the requested
size, image ``i`` is made from seed ``seed + i`` alone so it can be reproduced by itself, progress
is reported after every denoising step, and a cancellation stops the work between steps.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

# Imported from their defining modules: the package root re-exports them in a way type
# checkers resolve to placeholder classes.
from diffusers.pipelines.auto_pipeline import (
    AutoPipelineForImage2Image,
    AutoPipelineForInpainting,
    AutoPipelineForText2Image,
)
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import (
    StableDiffusionXLPipeline,
)

from imagefleet.worker.engines.base import (
    GeneratedImage,
    GenerationCancelled,
    Img2ImgRequest,
    InpaintRequest,
    StepCallback,
    StopCheck,
    Txt2ImgRequest,
    step_reporter,
)
from imagefleet.worker.engines.compositing import paste_unmasked
from imagefleet.worker.engines.prompts import prompt_embeddings
from imagefleet.worker.engines.schedulers import scheduler_spec, seed_scheduler
from imagefleet.worker.engines.single_file import CheckpointFamily, checkpoint_family

__all__ = ["DiffusersEngine", "GeneratedImage", "GenerationCancelled", "Txt2ImgRequest"]
# The job kinds this engine serves (the worker advertises only kinds its engine serves).
KINDS = ("txt2img", "img2img", "inpaint")

if TYPE_CHECKING:
    pass


class _Pipeline(Protocol):
    """What the engine uses of a diffusers text-to-image pipeline, SD and SDXL alike.

    Spelled out because diffusers' base class declares none of it: components are attached at
    run time and ``__call__`` is defined by each concrete pipeline.
    """

    scheduler: Any

    def __call__(self, **kwargs: Any) -> Any: ...

    def to(self, device: torch.device) -> Any: ...

    def set_progress_bar_config(self, **kwargs: Any) -> None: ...


class DiffusersEngine:
    """Owns the one resident pipeline and the device it runs on."""

    def __init__(self, device: str | None = None) -> None:
        """device None -> 'cuda' with float16 if torch.cuda.is_available(), else 'cpu' with float32.

        Half precision halves VRAM and is how SD checkpoints are meant to run on GPUs; CPUs
        have no fast float16 kernels, so they keep float32.
        """
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self._device = torch.device(device)
        self._dtype = torch.float16 if self._device.type == "cuda" else torch.float32
        self._pipeline: _Pipeline | None = None
        self._derived: dict[str, _Pipeline] = {}
        self._resident_key: str | None = None
        self._scheduler_config: dict[str, Any] = {}
        self.kinds = KINDS

    @property
    def torch_device(self) -> torch.device:
        """The device models run on: handlers that build on diffusers components themselves
        (the comfy graph engine) use the same one."""
        return self._device

    @property
    def vram_mb(self) -> int:
        """The GPU's memory (0 on a CPU): sent with claims, so a job that ran out of memory
        on this card is offered to bigger ones first."""
        if self._device.type != "cuda":
            return 0
        return int(torch.cuda.get_device_properties(self._device).total_memory // 2**20)

    @staticmethod
    def is_out_of_memory(exc: BaseException) -> bool:
        return isinstance(exc, torch.cuda.OutOfMemoryError)

    @property
    def resident_model(self) -> str | None:
        """key of the pipeline now loaded (one at a time)"""
        return self._resident_key

    def load(self, model_key: str, path: Path, config_dir: Path | None = None) -> float:
        """Makes model_key resident and returns the seconds spent loading (0.0 if it already was).

        ``path`` is a diffusers-layout directory (SD 1.x, SDXL, whatever model_index.json names)
        or one original-layout .safetensors file; ``config_dir`` is a diffusers directory whose
        configs describe that file, which also keeps loading offline. Pickle files are refused
        outright since unpickling runs code from the file. The previous pipeline is released
        before the new one loads so two never share the GPU; if loading then fails, nothing is
        resident. The safety checker is disabled: it costs VRAM and moderation is not this
        engine's job.
        """
        if model_key == self._resident_key:
            return 0.0
        open_pipeline = self._opener(path, config_dir)
        self._release()
        started = time.perf_counter()
        pipeline = open_pipeline()
        pipeline.set_progress_bar_config(disable=True)
        pipeline.to(self._device)
        self._pipeline = pipeline
        self._resident_key = model_key
        self._scheduler_config = dict(pipeline.scheduler.config)
        return time.perf_counter() - started

    def txt2img(
        self, request: Txt2ImgRequest, on_step: StepCallback, should_stop: StopCheck
    ) -> list[GeneratedImage]:
        """Generates ``request.num_images`` images; image i uses seed request.seed + i.

        The images are made one after another, not as one batch: a batch changes the shapes
        the kernels see, which shifts results by rounding, so a batched image would not be
        reproduced exactly by a single-image run with its seed. One at a time also keeps peak
        memory at a single image's. ``on_step(done, total)`` is called after every denoising
        step, counting across all images; a scheduler may take more steps than asked (PNDM
        takes one more). ``GenerationCancelled`` is raised at the first step boundary where
        should_stop() holds.
        """
        pipeline = self._require_pipeline()
        size = {"width": request.width, "height": request.height}
        return self._generate_all(pipeline, request, size, on_step, should_stop)

    def img2img(
        self, request: Img2ImgRequest, on_step: StepCallback, should_stop: StopCheck
    ) -> list[GeneratedImage]:
        """Like txt2img, starting from `request.init_image` (resized to the output size):
        `strength` of the denoising schedule is run, so fewer steps than `steps` are taken."""
        pipeline = self._derive("img2img", AutoPipelineForImage2Image)
        init = request.init_image.convert("RGB").resize((request.width, request.height))
        extra = {"image": init, "strength": request.strength}
        return self._generate_all(pipeline, request, extra, on_step, should_stop)

    def inpaint(
        self, request: InpaintRequest, on_step: StepCallback, should_stop: StopCheck
    ) -> list[GeneratedImage]:
        """Repaints the mask's white area; outside it the init image is pasted back, so those
        pixels come out unchanged (an ordinary checkpoint's VAE would otherwise alter them)."""
        pipeline = self._derive("inpaint", AutoPipelineForInpainting)
        size = (request.width, request.height)
        init = request.init_image.convert("RGB").resize(size)
        mask = request.mask.convert("L").resize(size)
        extra = {
            "image": init,
            "mask_image": mask,
            "strength": request.strength,
            "width": request.width,
            "height": request.height,
        }
        images = self._generate_all(pipeline, request, extra, on_step, should_stop)
        return [
            GeneratedImage(paste_unmasked(out.image, init, mask, request.mask_blur), out.seed)
            for out in images
        ]

    def _generate_all(
        self,
        pipeline: _Pipeline,
        request: Txt2ImgRequest,
        extra: dict[str, Any],
        on_step: StepCallback,
        should_stop: StopCheck,
    ) -> list[GeneratedImage]:
        pipeline.scheduler = scheduler_spec(request.scheduler).build(self._scheduler_config)
        if should_stop():
            raise GenerationCancelled("cancelled before the first step")
        embeddings = prompt_embeddings(pipeline, request.prompt, request.negative_prompt)
        return [
            self._generate(pipeline, request, embeddings, index, extra, on_step, should_stop)
            for index in range(request.num_images)
        ]

    def _generate(
        self,
        pipeline: _Pipeline,
        request: Txt2ImgRequest,
        embeddings: dict[str, torch.Tensor],
        index: int,
        extra: dict[str, Any],
        on_step: StepCallback,
        should_stop: StopCheck,
    ) -> GeneratedImage:
        """Makes image ``index`` of the request from its own seed (the prompt already encoded,
        by prompts.py, which reads A1111 weights and prompts past 77 tokens)."""
        seed = request.seed + index
        seed_scheduler(pipeline.scheduler, seed)
        result = pipeline(
            **embeddings,
            num_inference_steps=request.steps,
            guidance_scale=request.guidance_scale,
            generator=torch.Generator(device=self._device).manual_seed(seed),
            output_type="pil",
            callback_on_step_end=step_reporter(on_step, should_stop, index, request.num_images),
            **extra,
        )
        return GeneratedImage(image=result.images[0], seed=seed)

    def _derive(self, task: str, auto: Any) -> _Pipeline:
        """The resident model's pipeline for another task, sharing its components (no copy,
        no reload), made once per resident model."""
        derived = self._derived.get(task)
        if derived is None:
            derived = auto.from_pipe(self._require_pipeline())
            derived.set_progress_bar_config(disable=True)
            self._derived[task] = derived
        return derived

    def _opener(self, path: Path, config_dir: Path | None) -> Callable[[], _Pipeline]:
        """Checks what ``path`` is and returns how to load it, before anything is evicted.

        A path that cannot be loaded must fail while the current model is still resident,
        otherwise one bad job would cost the next job a full model reload.
        """
        if path.is_dir():
            return partial(self._open_directory, path)
        if path.is_file() and path.suffix.lower() == ".safetensors":
            return partial(self._open_single_file, path, checkpoint_family(path), config_dir)
        raise ValueError(
            f"cannot load {path}: expected a diffusers model directory or a .safetensors file"
        )

    def _open_directory(self, path: Path) -> _Pipeline:
        pipeline: _Pipeline = AutoPipelineForText2Image.from_pretrained(
            str(path), dtype=self._dtype, use_safetensors=True, **_safety_checker_off(path)
        )
        return pipeline

    def _open_single_file(
        self, path: Path, family: CheckpointFamily, config_dir: Path | None
    ) -> _Pipeline:
        """Loads an original-layout file; without ``config_dir`` diffusers fetches configs."""
        kwargs: dict[str, Any] = {"dtype": self._dtype}
        if config_dir is not None:
            kwargs.update(config=str(config_dir), local_files_only=True)
        if family == "sdxl":
            xl: _Pipeline = StableDiffusionXLPipeline.from_single_file(str(path), **kwargs)
            return xl
        sd: _Pipeline = StableDiffusionPipeline.from_single_file(
            str(path), safety_checker=None, requires_safety_checker=False, **kwargs
        )
        return sd

    def _require_pipeline(self) -> _Pipeline:
        if self._pipeline is None:
            raise RuntimeError("no model is resident: call load() before txt2img()")
        return self._pipeline

    def _release(self) -> None:
        """Drops the resident pipeline and hands its memory back before the next one loads."""
        self._pipeline = None
        self._derived = {}
        self._resident_key = None
        self._scheduler_config = {}
        gc.collect()
        if self._device.type == "cuda":
            torch.cuda.empty_cache()


def _safety_checker_off(model_dir: Path) -> dict[str, Any]:
    """Loader arguments that skip the safety checker, for pipelines that have one.

    Asking for this up front avoids reading its weights (over a gigabyte for SD 1.5) at all;
    SDXL pipelines have no such component and would reject the arguments.
    """
    index = model_dir / "model_index.json"
    if not index.is_file() or "safety_checker" not in json.loads(index.read_text()):
        return {}
    return {"safety_checker": None, "requires_safety_checker": False}
