"""The trainable LoRA weights and everything that steps them, as one unit a checkpoint captures.

Kept apart from the loop so that what a checkpoint must hold is visible in one place: the
weights, AdamW's moments, the LR scheduler's position, the fp16 grad scaler and the generator
that draws noise and timesteps. `snapshot` copies them to the CPU (the training thread goes on
at once); `restore` puts a checkpoint's copy back after checking it belongs to this run.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.optim.lr_scheduler import LambdaLR

from imagefleet.training.params import LoraTrainingParams
from imagefleet.training.schedule import lr_factor
from imagefleet.worker.training.checkpoint import (
    CorruptCheckpoint,
    IncompatibleCheckpoint,
    RunIdentity,
    TrainingState,
    capture_rng,
    restore_rng,
)

ADAM_BETAS = (0.9, 0.999)
ADAM_WEIGHT_DECAY = 1e-2
ADAM_EPSILON = 1e-8


@dataclass
class Optimization:
    trainable: list[tuple[str, torch.nn.Parameter]]
    optimizer: torch.optim.AdamW
    lr_scheduler: LambdaLR
    scaler: torch.amp.GradScaler
    noise: torch.Generator  # CPU generator for noise and timesteps: the same numbers on any device

    @classmethod
    def create(
        cls,
        trainable: list[tuple[str, torch.nn.Parameter]],
        params: LoraTrainingParams,
        seed: int,
        device_type: str,
        fp16: bool,
    ) -> Optimization:
        optimizer = torch.optim.AdamW(
            [parameter for _, parameter in trainable],
            lr=params.learning_rate,
            betas=ADAM_BETAS,
            weight_decay=ADAM_WEIGHT_DECAY,
            eps=ADAM_EPSILON,
        )
        schedule, warmup, total = params.lr_schedule, params.lr_warmup_steps, params.steps
        lr_scheduler = LambdaLR(
            optimizer, lambda step: lr_factor(min(step, total - 1), schedule, warmup, total)
        )
        return cls(
            trainable=trainable,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            scaler=torch.amp.GradScaler(device_type, enabled=fp16),
            noise=torch.Generator("cpu").manual_seed(seed),
        )

    @property
    def learning_rate(self) -> float:
        """The rate the next step uses."""
        return float(self.lr_scheduler.get_last_lr()[0])

    def step(self, loss: torch.Tensor, max_grad_norm: float) -> None:
        """Backward pass, gradient clipping, one AdamW step, one schedule step."""
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_([p for _, p in self.trainable], max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def snapshot(
        self, identity: RunIdentity, step: int, params: LoraTrainingParams
    ) -> TrainingState:
        optimizer = self.optimizer.state_dict()
        return TrainingState(
            identity=identity,
            step=step,
            total_steps=params.steps,
            samples_seen=step * params.batch_size,
            lora={name: p.detach().to("cpu", copy=True) for name, p in self.trainable},
            optimizer={
                "state": {
                    index: {
                        key: v.detach().to("cpu", copy=True) if isinstance(v, torch.Tensor) else v
                        for key, v in entry.items()
                    }
                    for index, entry in optimizer["state"].items()
                },
                "param_groups": copy.deepcopy(optimizer["param_groups"]),
            },
            lr_scheduler=copy.deepcopy(self.lr_scheduler.state_dict()),
            grad_scaler=dict(self.scaler.state_dict()),
            rng=capture_rng(self.noise),
        )

    def restore(
        self, state: TrainingState, identity: RunIdentity, params: LoraTrainingParams
    ) -> list[str]:
        """Continues from ``state``; returns notices. Raises a CheckpointError if the state
        cannot belong to this run (the caller may then fall back to an older checkpoint)."""
        source = state.source or Path("(in memory)")
        if state.identity != identity:
            raise IncompatibleCheckpoint(source, "belongs to another run")
        if state.samples_seen != state.step * params.batch_size or state.step >= params.steps:
            raise CorruptCheckpoint(source, f"impossible position at step {state.step}")
        expected = {name: p.shape for name, p in self.trainable}
        found = {name: tensor.shape for name, tensor in state.lora.items()}
        if expected != found:
            raise CorruptCheckpoint(source, "its LoRA tensors do not fit this model")
        with torch.no_grad():
            for name, parameter in self.trainable:
                parameter.copy_(state.lora[name])
        self.optimizer.load_state_dict(state.optimizer)
        self.lr_scheduler.load_state_dict(state.lr_scheduler)
        if state.grad_scaler:
            self.scaler.load_state_dict(state.grad_scaler)
        return restore_rng(state.rng, self.noise)
