"""LoRAs applied per job on top of a resident pipeline, without reloading it.

Each LoRA becomes a named peft adapter (``lora_<sha256 prefix>``) through diffusers'
``load_lora_weights``, which reads both the diffusers/peft and the kohya layouts (``.alpha``
keys, ``lora_te_``/``lora_te1_``/``lora_te2_`` text encoders, SDXL's sgm block names). A job's
LoRAs are activated with their weights (``set_adapters``); every other loaded adapter is
inactive, so it does not touch the job's pixels. Weights are never fused into the base: fusing
and unfusing round floats, and the next job without a LoRA must give exactly the pixels it gave
before.

After the job, its adapters are deactivated and kept ("parked") up to ``max_parked``, least
recently used beyond that deleted; with none left, ``unload_lora_weights`` removes the peft
layers altogether. Switching to a parked LoRA is a ``set_adapters`` call (milliseconds); a new
one costs a file read and adapter injection, still far from a pipeline reload.

Hot-swapping (``load_lora_weights(..., hotswap=True)``) is not used: it only helps a
``torch.compile``d UNet (no recompile), cannot swap text-encoder adapters, and reusing a slot
for a LoRA of another alpha kept the old scale in our tests (peft 0.21), i.e. wrong pixels.
"""

from __future__ import annotations

import logging
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("imagefleet.worker.adapters")
COMPONENTS = ("unet", "text_encoder", "text_encoder_2")


@dataclass(frozen=True)
class LoraSpec:
    key: str  # the file's sha256: the adapter's identity
    path: Path  # a .safetensors file
    weight: float = 1.0


@contextmanager
def _adapter_noise_muted() -> Iterator[None]:
    """Silences what the libraries say each time a second adapter joins a model: peft warns
    that several adapters are present, and transformers prints a "load report" listing the
    other adapters' weights as missing from the new file. Both describe the design here."""
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            yield
    finally:
        transformers_logging.set_verbosity(verbosity)


class LoraManager:
    """The adapters loaded on one resident pipeline, active or parked."""

    def __init__(self, pipeline: Any, *, max_parked: int = 8) -> None:
        self._pipeline = pipeline
        self._max_parked = max_parked
        self._loaded: OrderedDict[str, str] = OrderedDict()  # key -> adapter name, LRU first
        self._layers: list[Any] | None = None  # peft layers, cached until adapters change

    @property
    def loaded(self) -> list[str]:
        """Keys (sha256s) of the LoRAs loaded on the pipeline, least recently used first."""
        return list(self._loaded)

    def apply(self, loras: Sequence[LoraSpec]) -> None:
        """Loads what is missing and makes exactly these LoRAs active, at their weights."""
        keys = [lora.key for lora in loras]
        if len(set(keys)) != len(keys):
            raise ValueError("the same LoRA is listed twice; give it once with its weight")
        for lora in loras:
            if lora.key not in self._loaded:
                self._load(lora)
            self._loaded.move_to_end(lora.key)
        self._activate({self._loaded[lora.key]: lora.weight for lora in loras})

    def release(self) -> None:
        """Deactivates every LoRA and keeps at most ``max_parked`` of them loaded."""
        if not self._loaded:
            return
        self._activate({})
        while len(self._loaded) > self._max_parked:
            key, name = self._loaded.popitem(last=False)
            self._pipeline.delete_adapters([name])
            self._changed()
            log.debug("unloaded LoRA %s", key[:12])
        if not self._loaded:
            # Removes the peft layers too: the pipeline is then exactly as it was loaded.
            self._pipeline.unload_lora_weights()
            self._changed()

    def _changed(self) -> None:
        self._layers = None

    def _load(self, lora: LoraSpec) -> None:
        from safetensors import safe_open

        name = f"lora_{lora.key[:16]}"
        # Refuses anything but safetensors before diffusers sees the path. The path, not the
        # tensors, goes to diffusers: only from a file does it read the adapters' LoraConfig in
        # the header (a trained LoRA's alpha; without it alpha = rank, the wrong strength), and
        # use_safetensors=True forbids its fall-back to pickle.
        with safe_open(str(lora.path), framework="pt"):
            pass
        self._changed()
        try:
            with _adapter_noise_muted():
                self._pipeline.load_lora_weights(
                    str(lora.path), adapter_name=name, use_safetensors=True
                )
        except (ValueError, KeyError, RuntimeError) as exc:
            self._forget(name)
            if not self._loaded:
                self._pipeline.unload_lora_weights()
            self._changed()
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise ValueError(
                f"LoRA {lora.path.name} does not fit this checkpoint ({reason}); check that "
                "it was trained for the same base model (SD 1.5 or SDXL)"
            ) from exc
        if not any(name in names for names in self._pipeline.get_list_adapters().values()):
            raise ValueError(
                f"LoRA {lora.path.name} changed no layer of this checkpoint: it was trained "
                "for another base model, or holds no LoRA weights"
            )
        self._loaded[lora.key] = name

    def _forget(self, name: str) -> None:
        """Removes a half-loaded adapter (e.g. the UNet took it, a text encoder refused)."""
        present = {n for names in self._pipeline.get_list_adapters().values() for n in names}
        if name in present:
            self._pipeline.delete_adapters([name])

    def _activate(self, weights: dict[str, float]) -> None:
        """Makes exactly these adapters active at these weights (none: no LoRA at all).

        Works on the adapted layers directly, through peft's per-layer API, instead of
        diffusers' ``set_adapters``/``disable_lora``: those walk every module of every component
        on each call, which cost more than a whole switch should. "No LoRA" is an empty list of
        active adapters, which leaves each layer computing exactly its base layer; adapters are
        never disabled and re-enabled, which would cost two more passes. Each layer gets the
        full list of names; peft skips those a layer lacks (a UNet-only LoRA in a text encoder).
        """
        names = list(weights)
        for layer in self._adapted_layers():
            # inference_mode: adapter weights stay frozen (no requires_grad flips to undo).
            layer.set_adapter(names, inference_mode=True)
            for name, weight in weights.items():
                layer.set_scale(name, weight)

    def _adapted_layers(self) -> list[Any]:
        """The peft-wrapped layers of every component, found once per change of adapters."""
        if self._layers is None:
            from peft.tuners.tuners_utils import BaseTunerLayer

            self._layers = [
                module
                for component in COMPONENTS
                if (model := getattr(self._pipeline, component, None)) is not None
                for module in model.modules()
                if isinstance(module, BaseTunerLayer)
            ]
        return self._layers
