"""Resumable training checkpoints: a folder of safetensors and JSON, never pickle.

A checkpoint folder holds:

- ``lora.safetensors``: the trainable LoRA parameters, by their names in the model;
- ``optimizer.safetensors``: the optimizer's per-parameter tensors (``state.<index>.<name>``);
- ``rng.safetensors``: torch's CPU and CUDA generator states and the engine's noise generator;
- ``state.json``, written last: step, samples seen (the data-order position), the optimizer's
  param groups and scalar state, the LR scheduler's and grad scaler's state dicts, Python's and
  numpy's random states, what run it belongs to (`RunIdentity`), and the sha256 of each file.

torch's ``torch.save`` of an optimizer state dict is a pickle, which runs code when loaded; a
checkpoint comes back from object storage, so only safetensors and JSON are read here. A
checkpoint that is truncated, altered or half-written fails its hash or parse check and raises
`CorruptCheckpoint`; `load_newest_valid` then falls back to the previous one.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from imagefleet.hashing import file_sha256
from imagefleet.training.params import LoraTrainingParams

CHECKPOINT_FORMAT = "imagefleet-lora-checkpoint"
CHECKPOINT_VERSION = 1
STATE_FILE = "state.json"
LORA_FILE = "lora.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
RNG_FILE = "rng.safetensors"
TENSOR_FILES = (LORA_FILE, OPTIMIZER_FILE, RNG_FILE)
# Options that change nothing about the weights a step produces: a run may resume with
# other values of these (e.g. an operator raised keep_last).
_NON_MATH_FIELDS = frozenset({"output_name", "trigger_words", "checkpoint_every", "keep_last"})


class CheckpointError(Exception):
    """A checkpoint cannot be resumed from; fall back to an older one."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"checkpoint {path}: {reason}")
        self.path = path
        self.reason = reason


class CorruptCheckpoint(CheckpointError):
    """Missing, truncated or altered files, or contents that do not fit the model."""


class IncompatibleCheckpoint(CheckpointError):
    """A sound checkpoint of another run (other hyperparameters, dataset or base model)."""


@dataclass(frozen=True)
class RunIdentity:
    """What a checkpoint must share with the run resuming it for the result to be the same."""

    params_sha256: str
    dataset_sha256: str
    base_model_sha256: str

    @classmethod
    def of(
        cls, params: LoraTrainingParams, dataset_sha256: str, base_model_sha256: str
    ) -> RunIdentity:
        relevant = params.model_dump(mode="json", exclude=set(_NON_MATH_FIELDS))
        canonical = json.dumps(relevant, sort_keys=True, separators=(",", ":"))
        return cls(
            hashlib.sha256(canonical.encode()).hexdigest(), dataset_sha256, base_model_sha256
        )


@dataclass
class RngState:
    torch_cpu: torch.Tensor
    torch_cuda: list[torch.Tensor]
    noise: torch.Tensor  # the engine's own generator for noise and timesteps
    python: tuple[Any, ...]
    numpy: tuple[Any, ...]


@dataclass
class TrainingState:
    """Everything needed to continue a run after ``step`` steps, on CPU tensors."""

    identity: RunIdentity
    step: int
    total_steps: int
    samples_seen: int
    lora: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    lr_scheduler: dict[str, Any]
    grad_scaler: dict[str, Any]
    rng: RngState
    source: Path | None = None  # the folder it was read from, for error messages


@dataclass(frozen=True)
class CheckpointRef:
    """A checkpoint folder on local disk and the step the orchestrator recorded for it."""

    step: int
    path: Path


@dataclass(frozen=True)
class SkippedCheckpoint:
    step: int
    path: Path
    reason: str


@dataclass
class ResumePoint:
    """The newest checkpoint that loaded (None: start from step 0) and those passed over."""

    state: TrainingState | None
    skipped: list[SkippedCheckpoint] = field(default_factory=list)


def write_checkpoint(state: TrainingState, folder: Path) -> Path:
    """Writes ``state`` into ``folder`` (created; replaced if present) and returns it.

    Files go to a sibling temporary folder first and state.json, which lists the others'
    hashes, is written last, so a crash mid-write never leaves a folder that looks complete.
    """
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    optimizer_tensors, optimizer_json = _split_optimizer(state.optimizer)
    rng_tensors = {"torch_cpu": state.rng.torch_cpu, "noise": state.rng.noise}
    rng_tensors.update({f"cuda.{i}": s for i, s in enumerate(state.rng.torch_cuda)})
    save_file(state.lora, str(partial / LORA_FILE))
    save_file(optimizer_tensors, str(partial / OPTIMIZER_FILE))
    save_file(rng_tensors, str(partial / RNG_FILE))
    document = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "identity": vars(state.identity),
        "step": state.step,
        "total_steps": state.total_steps,
        "samples_seen": state.samples_seen,
        "optimizer": optimizer_json,
        "lr_scheduler": state.lr_scheduler,
        "grad_scaler": state.grad_scaler,
        "python_random": list(state.rng.python),
        "numpy_random": [_plain(value) for value in state.rng.numpy],
        "cuda_devices": len(state.rng.torch_cuda),
        "files": {name: file_sha256(partial / name) for name in TENSOR_FILES},
    }
    (partial / STATE_FILE).write_text(json.dumps(document, indent=1), encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder


def read_checkpoint(folder: Path) -> TrainingState:
    """Reads and verifies a checkpoint folder; raises `CorruptCheckpoint` saying what is wrong."""
    state_path = folder / STATE_FILE
    try:
        document = json.loads(state_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CorruptCheckpoint(folder, f"{STATE_FILE} is missing (incomplete upload?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptCheckpoint(folder, f"{STATE_FILE} is unreadable: {exc}") from None
    try:
        return _parse(folder, document)
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, OSError, SafetensorError) as exc:
        raise CorruptCheckpoint(
            folder, f"malformed contents: {type(exc).__name__}: {exc}"
        ) from None


def load_newest_valid(checkpoints: Iterable[CheckpointRef], identity: RunIdentity) -> ResumePoint:
    """Tries the checkpoints newest (highest step) first; returns the first that loads.

    Each one skipped is reported with its reason, for the attempt history. A checkpoint whose
    recorded step differs from the orchestrator's record, or that belongs to another run, is
    skipped like a corrupt one. No valid checkpoint: the run starts from step 0.
    """
    skipped: list[SkippedCheckpoint] = []
    for ref in sorted(checkpoints, key=lambda ref: ref.step, reverse=True):
        try:
            state = read_checkpoint(ref.path)
            if state.step != ref.step:
                raise CorruptCheckpoint(
                    ref.path, f"holds step {state.step}, but was recorded as step {ref.step}"
                )
            if state.identity != identity:
                raise IncompatibleCheckpoint(
                    ref.path, _identity_difference(state.identity, identity)
                )
        except CheckpointError as exc:
            skipped.append(SkippedCheckpoint(ref.step, ref.path, exc.reason))
            continue
        return ResumePoint(state, skipped)
    return ResumePoint(None, skipped)


def _parse(folder: Path, document: dict[str, Any]) -> TrainingState:
    if document.get("format") != CHECKPOINT_FORMAT or document.get("version") != CHECKPOINT_VERSION:
        raise CorruptCheckpoint(
            folder,
            f"format {document.get('format')!r} version {document.get('version')!r}; this "
            f"worker reads {CHECKPOINT_FORMAT!r} version {CHECKPOINT_VERSION}",
        )
    for name in TENSOR_FILES:
        path = folder / name
        if not path.is_file():
            raise CorruptCheckpoint(folder, f"{name} is missing")
        if file_sha256(path) != document["files"][name]:
            raise CorruptCheckpoint(folder, f"{name} does not match its recorded sha256")
    rng = load_file(str(folder / RNG_FILE))
    cuda = [rng[f"cuda.{i}"] for i in range(int(document["cuda_devices"]))]
    python_state = document["python_random"]
    numpy_state = document["numpy_random"]
    step = int(document["step"])
    if step < 1 or int(document["samples_seen"]) < step:
        raise CorruptCheckpoint(folder, f"impossible position: step {step}")
    return TrainingState(
        identity=RunIdentity(**document["identity"]),
        step=step,
        total_steps=int(document["total_steps"]),
        samples_seen=int(document["samples_seen"]),
        lora=load_file(str(folder / LORA_FILE)),
        optimizer=_join_optimizer(load_file(str(folder / OPTIMIZER_FILE)), document["optimizer"]),
        lr_scheduler=dict(document["lr_scheduler"]),
        grad_scaler=dict(document["grad_scaler"]),
        rng=RngState(
            torch_cpu=rng["torch_cpu"],
            torch_cuda=cuda,
            noise=rng["noise"],
            python=(python_state[0], tuple(python_state[1]), python_state[2]),
            numpy=(
                numpy_state[0],
                np.asarray(numpy_state[1], dtype=np.uint32),
                *numpy_state[2:],
            ),
        ),
        source=folder,
    )


def _split_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer state dict as safetensors tensors plus a JSON-able rest."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state_dict["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _join_optimizer(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        prefix, index, key = name.split(".", 2)
        if prefix != "state":
            raise ValueError(f"unexpected optimizer tensor {name!r}")
        state.setdefault(int(index), {})[key] = tensor
    for index, values in rest["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    groups = [
        {key: tuple(value) if key == "betas" else value for key, value in group.items()}
        for group in rest["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def _plain(value: Any) -> Any:
    return value.tolist() if isinstance(value, np.ndarray) else value


def _identity_difference(found: RunIdentity, expected: RunIdentity) -> str:
    differing = [
        name
        for name in ("params_sha256", "dataset_sha256", "base_model_sha256")
        if getattr(found, name) != getattr(expected, name)
    ]
    return f"belongs to another run (different {', '.join(differing)})"


def capture_rng(noise: torch.Generator) -> RngState:
    """The process's random states now, plus the engine's noise generator."""
    cuda = [s.clone() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []
    return RngState(
        torch_cpu=torch.get_rng_state().clone(),
        torch_cuda=cuda,
        noise=noise.get_state().clone(),
        python=random.getstate(),
        numpy=cast(tuple[Any, ...], np.random.get_state(legacy=True)),
    )


def restore_rng(rng: RngState, noise: torch.Generator) -> list[str]:
    """Puts the saved random states back; returns notices about what could not be restored."""
    torch.set_rng_state(rng.torch_cpu)
    noise.set_state(rng.noise)
    random.setstate(rng.python)
    np.random.set_state(rng.numpy)
    if not rng.torch_cuda:
        return []
    if torch.cuda.is_available() and torch.cuda.device_count() == len(rng.torch_cuda):
        torch.cuda.set_rng_state_all(rng.torch_cuda)
        return []
    return [
        f"the checkpoint saved {len(rng.torch_cuda)} CUDA generator states but this worker has "
        f"{torch.cuda.device_count() if torch.cuda.is_available() else 0} CUDA devices: they were "
        "not restored (the engine draws its noise on the CPU generator, which was)"
    ]
