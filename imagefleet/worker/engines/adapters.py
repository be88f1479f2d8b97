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
from collections.abc import Sequence
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


class LoraManager:
    """The adapters loaded on one resident pipeline, active or parked."""

    def __init__(self, pipeline: Any, *, max_parked: int = 8) -> None:
        self._pipeline = pipeline
        self._max_parked = max_parked
        self._loaded: OrderedDict[str, str] = OrderedDict()  # key -> adapter name, LRU first

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
            log.debug("unloaded LoRA %s", key[:12])
        if not self._loaded:
            # Removes the peft layers too: the pipeline is then exactly as it was loaded.
            self._pipeline.unload_lora_weights()

    def _load(self, lora: LoraSpec) -> None:
        from safetensors.torch import load_file

        name = f"lora_{lora.key[:16]}"
        # Read here, as safetensors: a path given to diffusers could fall back to pickle.
        state_dict = load_file(str(lora.path))
        try:
            with warnings.catch_warnings():
                # peft warns whenever a second adapter joins a model: that is the design here.
                warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                self._pipeline.load_lora_weights(state_dict, adapter_name=name)
        except (ValueError, KeyError, RuntimeError) as exc:
            self._forget(name)
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
        """Per component: these adapters (those it has) at these weights, or LoRA off."""
        from diffusers.loaders.lora_base import (
            disable_lora_for_text_encoder,
            enable_lora_for_text_encoder,
            set_adapters_for_text_encoder,
        )

        present = self._pipeline.get_list_adapters()
        for component in COMPONENTS:
            model = getattr(self._pipeline, component, None)
            if model is None or component not in present:
                continue
            names = [name for name in weights if name in present[component]]
            is_unet = component == "unet"
            if not names:
                model.disable_lora() if is_unet else disable_lora_for_text_encoder(model)
                continue
            values = [weights[name] for name in names]
            if is_unet:
                model.enable_lora()
                model.set_adapters(names, values)
            else:
                enable_lora_for_text_encoder(model)
                set_adapters_for_text_encoder(names, model, values)
