"""Trains a DreamBooth LoRA on an SD 1.x-shaped or SDXL base model, resumably, on CUDA or CPU.

The recipe: LoRA adapters on the UNet's attention projections (optionally the text encoders',
one for SD 1.x, both for SDXL, whose captions are then encoded at every step),
frozen base weights, noise-prediction MSE loss on VAE latents of the images at random
timesteps, optional prior preservation (class images made by the base model, their loss added
with a weight), AdamW with gradient clipping and a learning-rate schedule.

What makes it a service on interruptible GPUs:

- Every source of randomness is accounted for: noise and timesteps come from one CPU generator
  seeded by the job (so any device draws the same numbers), the data order is a pure function
  of the sample number (data.batch_indices), and a checkpoint carries every generator's state.
  On CPU a run stopped at step k and resumed from its step-k checkpoint in another process ends
  with the same weights as an uninterrupted run.
- Checkpoints are snapshotted on the training thread (a copy of a few megabytes) and written
  and handed over on a background thread (uploader.py); training does not wait for uploads.
- The stop check runs between steps; a hand-back checkpoints the current step first.
- A NaN or infinite loss is a final failure with the reason, not something to retry.
"""

from __future__ import annotations

import math
import random
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F

from imagefleet.hashing import file_sha256
from imagefleet.training.dataset import DatasetManifest
from imagefleet.training.params import LoraTrainingParams
from imagefleet.worker.training import components
from imagefleet.worker.training.checkpoint import RunIdentity, TrainingState
from imagefleet.worker.training.conditioning import TextConditioning
from imagefleet.worker.training.data import batch_indices
from imagefleet.worker.training.lora_file import export_lora
from imagefleet.worker.training.optimization import Optimization
from imagefleet.worker.training.types import (
    CheckpointCallback,
    CheckpointReport,
    LoraMetadata,
    NonFiniteLoss,
    ProgressCallback,
    StepProgress,
    StopCheck,
    StopReason,
    TrainingFailed,
    TrainingResult,
    TrainingStopped,
)
from imagefleet.worker.training.uploader import CheckpointUploader

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class LoraTrainer:
    """One training run of one job on one worker; build a new one for each attempt."""

    def __init__(
        self,
        base_model: Path,
        params: LoraTrainingParams,
        dataset: DatasetManifest,
        *,
        base_model_sha256: str,
        work_dir: Path,
        config_dir: Path | None = None,
        device: str | None = None,
    ) -> None:
        """``base_model``: a diffusers folder or single .safetensors file (``config_dir`` then
        names its diffusers configs); ``work_dir``: where checkpoints and the result are written.
        device None -> CUDA when available, else CPU."""
        if params.seed is None:
            raise TrainingFailed(
                "params.seed is None: fix the seed at submit (training.params.with_fixed_seed), "
                "so that every attempt of the job draws the same noise"
            )
        self.params = params
        self.seed = params.seed
        self.dataset = dataset
        self.identity = RunIdentity.of(params, dataset.sha256, base_model_sha256)
        self._base_model = base_model
        self._config_dir = config_dir
        self._work_dir = work_dir
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.notices: list[str] = []
        self._weight_dtype, self._autocast_dtype = self._precision()

    def train(
        self,
        *,
        resume: TrainingState | None = None,
        on_progress: ProgressCallback | None = None,
        should_stop: StopCheck | None = None,
        on_checkpoint: CheckpointCallback | None = None,
    ) -> TrainingResult:
        """Runs from step 0, or from ``resume`` (see checkpoint.load_newest_valid), to the end.

        ``on_progress`` is called after every step; ``should_stop`` before every step (and
        between class images), raising `TrainingStopped` when it answers; ``on_checkpoint``
        receives every ``checkpoint_every`` steps a checkpoint folder, on a background thread
        (none are made without it). Raises `TrainingFailed` subclasses for final failures.
        """
        started = time.perf_counter()
        stop_check = should_stop or (lambda: None)
        self._setup(resume, stop_check)
        uploader = (
            CheckpointUploader(self._work_dir / "checkpoints", on_checkpoint)
            if on_checkpoint is not None
            else None
        )
        setup_seconds = time.perf_counter() - started
        try:
            final_loss = self._loop(uploader, on_progress, stop_check)
        finally:
            report = uploader.close(drop_waiting=True) if uploader else CheckpointReport()
        train_seconds = time.perf_counter() - started - setup_seconds
        return self._result(final_loss, setup_seconds, train_seconds, report)

    def _setup(self, resume: TrainingState | None, stop_check: StopCheck) -> None:
        params = self.params
        self._start_step = 0 if resume is None else resume.step
        self._models = models = components.open_models(self._base_model, self._config_dir)
        components.check_resolution(models, params.resolution)
        # Opened in float32; cast only when asked (diffusers warns about casts it did not make).
        for module in models.frozen_modules():
            module.to(self.device)
            if module is not models.vae and self._weight_dtype != torch.float32:
                module.to(self._weight_dtype)
        self._class_latents: torch.Tensor | None = None
        if params.prior_preservation:
            self._class_latents = components.generate_class_latents(
                models, params, self.seed, self.device, lambda: self._check_setup_stop(stop_check)
            )
        self._latents = components.encode_images(
            models, self.dataset, params.resolution, self.device
        )
        with self._autocast():
            self._text = TextConditioning(
                models,
                self.dataset,
                params.class_prompt or "",
                params.resolution,
                self.device,
                trained=params.train_text_encoder,
            )
        torch.manual_seed(self.seed)
        random.seed(self.seed)
        np.random.seed(self.seed % 2**32)
        self._opt = Optimization.create(
            components.add_adapters(models, params),
            params,
            self.seed,
            self.device.type,
            fp16=self._autocast_dtype == torch.float16,
        )
        if resume is not None:
            self.notices += self._opt.restore(resume, self.identity, params)

    def _loop(
        self,
        uploader: CheckpointUploader | None,
        on_progress: ProgressCallback | None,
        stop_check: StopCheck,
    ) -> float:
        params = self.params
        loss = math.nan
        submitted = self._start_step
        for step in range(self._start_step, params.steps):
            reason = stop_check()
            if reason is not None:
                self._stop(reason, step, submitted, uploader)
            learning_rate = self._opt.learning_rate
            loss = self._train_step(step, learning_rate)
            done = step + 1
            if on_progress is not None:
                on_progress(StepProgress(done, params.steps, loss, learning_rate))
            if uploader is not None and done % params.checkpoint_every == 0 and done < params.steps:
                uploader.submit(self._opt.snapshot(self.identity, done, params))
                submitted = done
        return loss

    def _train_step(self, step: int, learning_rate: float) -> float:
        """One optimizer step on batch ``step``; returns its loss."""
        params = self.params
        batch = batch_indices(
            self.seed,
            step * params.batch_size,
            params.batch_size,
            len(self.dataset.items),
            "instance",
        )
        mean, std = self._latents.mean[batch], self._latents.std[batch]
        latents = mean + std * self._randn(mean.shape)
        latents = latents * self._models.vae.config["scaling_factor"]
        class_count = 0
        with self._autocast():
            if self._class_latents is not None:
                chosen = batch_indices(
                    self.seed,
                    step * params.batch_size,
                    params.batch_size,
                    len(self._class_latents),
                    "class",
                )
                class_count = len(chosen)
                latents = torch.cat([latents, self._class_latents[chosen]])
            # Through the adapted text encoders, with gradients, when they are trained.
            states, added = self._text.batch(batch, class_count, self._weight_dtype)
            noise = self._randn(latents.shape)
            drawn = torch.randint(
                0,
                self._models.noise_scheduler.config["num_train_timesteps"],
                (latents.shape[0],),
                generator=self._opt.noise,
            )
            timesteps = cast(torch.IntTensor, drawn.to(self.device))
            noisy = self._models.noise_scheduler.add_noise(latents, noise, timesteps)
            prediction = self._models.unet(
                noisy.to(self._weight_dtype),
                timesteps,
                states.to(self._weight_dtype),
                added_cond_kwargs=added,
            ).sample
        loss = self._loss(prediction.float(), self._target(latents, noise, timesteps))
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteLoss(step + 1, value, learning_rate)
        self._opt.step(loss, params.max_grad_norm)
        return value

    def _target(
        self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.IntTensor
    ) -> torch.Tensor:
        scheduler = self._models.noise_scheduler
        prediction_type = scheduler.config["prediction_type"]
        if prediction_type == "epsilon":
            return noise.float()
        if prediction_type == "v_prediction":
            return scheduler.get_velocity(latents, noise, timesteps).float()
        raise TrainingFailed(
            f"the base model predicts {prediction_type!r}; "
            "this engine trains epsilon and v_prediction models"
        )

    def _loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self._class_latents is None:
            return F.mse_loss(prediction, target)
        instance_pred, class_pred = prediction.chunk(2)
        instance_target, class_target = target.chunk(2)
        prior = F.mse_loss(class_pred, class_target)
        return F.mse_loss(instance_pred, instance_target) + self.params.prior_loss_weight * prior

    def _randn(self, shape: torch.Size) -> torch.Tensor:
        """Normal noise from the job's CPU generator, moved to the device: the same on any GPU."""
        return torch.randn(shape, generator=self._opt.noise).to(self.device)

    def _stop(
        self,
        reason: StopReason,
        steps_done: int,
        submitted: int,
        uploader: CheckpointUploader | None,
    ) -> None:
        if uploader is None:
            raise TrainingStopped(reason, steps_done, None)
        if reason == StopReason.hand_back:
            if steps_done > submitted:
                uploader.submit(self._opt.snapshot(self.identity, steps_done, self.params))
            uploader.drain()
        report = uploader.close(drop_waiting=True)
        raise TrainingStopped(reason, steps_done, max(report.finished, default=None), report)

    def _check_setup_stop(self, stop_check: StopCheck) -> None:
        reason = stop_check()
        if reason is not None:
            raise TrainingStopped(reason, self._start_step, None)

    def _result(
        self,
        final_loss: float,
        setup_seconds: float,
        train_seconds: float,
        report: CheckpointReport,
    ) -> TrainingResult:
        params = self.params
        metadata = LoraMetadata(
            base_model_sha256=self.identity.base_model_sha256,
            rank=params.rank,
            alpha=params.lora_alpha,
            trigger_words=params.effective_trigger_words(),
            steps=params.steps,
            dataset_sha256=self.dataset.sha256,
            train_text_encoder=params.train_text_encoder,
            resolution=params.resolution,
        )
        path = export_lora(
            self._models.unet,
            self._models.text_encoders() if params.train_text_encoder else [],
            metadata,
            self._work_dir / f"{params.output_name}.safetensors",
            sdxl=self._models.sdxl,
        )
        return TrainingResult(
            lora_path=path,
            sha256=file_sha256(path),
            size_bytes=path.stat().st_size,
            metadata=metadata,
            start_step=self._start_step,
            final_loss=final_loss,
            setup_seconds=setup_seconds,
            train_seconds=train_seconds,
            checkpoints=report,
            notices=list(self.notices),
        )

    def _precision(self) -> tuple[torch.dtype, torch.dtype | None]:
        """(dtype of the frozen weights, autocast dtype or None) for the requested precision."""
        requested = self.params.mixed_precision
        if requested == "no":
            return torch.float32, None
        if self.device.type != "cuda":
            self.notices.append(
                f"mixed_precision {requested} needs a CUDA GPU; this worker trains on "
                f"{self.device.type} in float32"
            )
            return torch.float32, None
        if requested == "bf16" and not torch.cuda.is_bf16_supported():
            self.notices.append("this GPU has no bfloat16 support: training in float32")
            return torch.float32, None
        return _DTYPES[requested], _DTYPES[requested]

    def _autocast(self) -> AbstractContextManager[object]:
        if self._autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self._autocast_dtype)
