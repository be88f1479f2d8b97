"""The model manager: from a job's models to a ready pipeline, and back to a clean one after.

``prepare(models)`` is all a handler calls. For the job's combo it

1. leases every file in the disk cache (downloading what is missing; nothing the job holds can
   be evicted while it runs),
2. makes the checkpoint, refiner, VAE and ControlNet resident on the device (LRU within the
   device budget; loaded once, reused by later jobs),
3. applies the per-job parts on top of the resident checkpoint: the VAE swap, the LoRAs at their
   weights, the embeddings with their trigger words, and the ControlNet or task variant of the
   pipeline,

yields them, and undoes step 3 when the job ends, whatever happened, so the next job sees the
checkpoint exactly as loaded. Each step is timed into the job's StageClock. What stays resident
(and which recent combos could run with nothing to load) is reported with every claim.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagefleet.worker.engines.adapters import LoraManager, LoraSpec
from imagefleet.worker.engines.components import Task, for_task, keep_vae_float32, vae_swapped
from imagefleet.worker.engines.embeddings import EmbeddingSpec, embeddings_loaded
from imagefleet.worker.engines.model_specs import ModelSpec, by_role, combo_key, only
from imagefleet.worker.engines.pipeline_loading import open_checkpoint, open_controlnet, open_vae
from imagefleet.worker.engines.pipeline_pool import ResidentPool, default_budget
from imagefleet.worker.engines.timings import StageClock
from imagefleet.worker.model_cache import ModelCache
from imagefleet.worker.model_settings import ModelSettings

if TYPE_CHECKING:
    import torch

log = logging.getLogger("imagefleet.worker.models")
CONFIG_MAX_BYTES = 64 << 20  # a single-file checkpoint's config folder: JSON and tokenizers
RECENT_COMBOS = 32


@dataclass
class PreparedCombo:
    """What a handler runs: the pipeline for its task with everything applied."""

    pipeline: Any
    refiner: Any | None
    controlnet_scale: float | None  # the ControlNet's weight, for controlnet_conditioning_scale
    trigger_words: list[str]  # of the loaded embeddings
    combo_key: str
    is_sdxl: bool


@dataclass(frozen=True)
class _ComboNeeds:
    residents: frozenset[str]  # pool keys
    checkpoint: str  # the pool key whose LoraManager must hold the LoRAs
    loras: frozenset[str]


class ModelManager:
    def __init__(
        self,
        cache: ModelCache,
        *,
        settings: ModelSettings | None = None,
        device: str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        """device None: CUDA when available, else CPU; dtype None: float16 on CUDA (how SD
        checkpoints are meant to run), float32 on CPU (no fast half-precision kernels)."""
        import torch

        self.settings = settings or cache.settings
        self.cache = cache
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if dtype is None:
            dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.dtype = dtype
        budget = self.settings.vram_cache_bytes or default_budget(device)
        self.pool = ResidentPool(budget, on_evict=self._evicted)
        self._loras: dict[str, LoraManager] = {}
        self._recent: OrderedDict[str, _ComboNeeds] = OrderedDict()

    @contextmanager
    def prepare(
        self,
        models: Sequence[ModelSpec],
        *,
        task: Task = "txt2img",
        clock: StageClock | None = None,
        combo: str | None = None,
    ) -> Iterator[PreparedCombo]:
        """The job's pipeline, ready; everything per-job is undone when the block ends."""
        clock = clock or StageClock()
        checkpoint = only(models, "checkpoint")
        if checkpoint is None:
            raise ValueError("a generation job needs a checkpoint model")
        refiner_spec, vae_spec = only(models, "refiner"), only(models, "vae")
        controlnet_spec = only(models, "controlnet")
        key = combo or combo_key(models)
        with ExitStack() as stack:
            files = self._lease_files(stack, models, clock)
            base_key = f"checkpoint:{checkpoint.sha256}"
            config_dir = self._config_dir(stack, checkpoint, clock)
            base = self._resident(
                stack,
                clock,
                base_key,
                lambda: self._open_checkpoint(files[checkpoint.sha256], config_dir),
                checkpoint.size_bytes,
            )
            is_sdxl = getattr(base, "text_encoder_2", None) is not None
            needs = {base_key}
            refiner = None
            if refiner_spec is not None:
                refiner_key = f"refiner:{refiner_spec.sha256}"
                refiner_config = self._config_dir(stack, refiner_spec, clock)
                refiner = self._resident(
                    stack,
                    clock,
                    refiner_key,
                    lambda: self._open_checkpoint(
                        files[refiner_spec.sha256], refiner_config, refiner=True
                    ),
                    refiner_spec.size_bytes,
                )
                needs.add(refiner_key)
            vae = None
            if vae_spec is not None:
                vae_key = f"vae:{vae_spec.sha256}:{checkpoint.sha256}"
                vae = self._resident(
                    stack,
                    clock,
                    vae_key,
                    lambda: self._open_vae(files[vae_spec.sha256], base, is_sdxl),
                    vae_spec.size_bytes,
                )
                needs.add(vae_key)
            controlnet = None
            if controlnet_spec is not None:
                controlnet_key = f"controlnet:{controlnet_spec.sha256}"
                controlnet = self._resident(
                    stack,
                    clock,
                    controlnet_key,
                    lambda: open_controlnet(
                        files[controlnet_spec.sha256],
                        unet=base.unet,
                        device=self.device,
                        dtype=self.dtype,
                    ),
                    controlnet_spec.size_bytes,
                )
                needs.add(controlnet_key)
            loras = [
                LoraSpec(m.sha256, files[m.sha256], 1.0 if m.weight is None else m.weight)
                for m in by_role(models, "lora")
            ]
            embeddings = [
                EmbeddingSpec(
                    m.sha256, files[m.sha256], m.trigger_words[0] if m.trigger_words else None
                )
                for m in by_role(models, "embedding")
            ]
            undo = ExitStack()
            stack.callback(_timed, clock, undo.close)
            with clock.stage("adapters"):
                undo.enter_context(vae_swapped(base, vae))
                manager = self._lora_manager(base_key, base)
                undo.callback(manager.release)
                manager.apply(loras)
                triggers = undo.enter_context(embeddings_loaded(base, embeddings))
                pipeline = for_task(base, task, controlnet)
            self._remember(key, needs, base_key, {lora.key for lora in loras})
            yield PreparedCombo(
                pipeline=pipeline,
                refiner=refiner,
                controlnet_scale=None if controlnet_spec is None else controlnet_spec.weight,
                trigger_words=triggers,
                combo_key=key,
                is_sdxl=is_sdxl,
            )

    def resident_models(self) -> list[str]:
        """sha256s on the device: resident checkpoints, refiners, VAEs, ControlNets, LoRAs."""
        shas = {key.split(":")[1] for key in self.pool.resident()}
        for manager in self._loras.values():
            shas.update(manager.loaded)
        return sorted(shas)

    def resident_combos(self) -> list[str]:
        """Recent combo keys that would run now without loading anything but embeddings."""
        resident = set(self.pool.resident())
        ready = []
        for key, needs in self._recent.items():
            manager = self._loras.get(needs.checkpoint)
            loaded = set(manager.loaded) if manager is not None else set()
            if needs.residents <= resident and needs.loras <= loaded:
                ready.append(key)
        return ready

    def _lease_files(
        self, stack: ExitStack, models: Sequence[ModelSpec], clock: StageClock
    ) -> dict[str, Path]:
        files: dict[str, Path] = {}
        for model in models:
            if model.sha256 in files:
                continue
            leased = stack.enter_context(
                self.cache.lease(model.source, model.sha256, model.size_bytes, kind=model.kind)
            )
            clock.add("download", leased.fetch_seconds)
            files[model.sha256] = leased.path
        return files

    def _config_dir(self, stack: ExitStack, model: ModelSpec, clock: StageClock) -> Path | None:
        if not (model.config_source and model.config_sha256):
            return None
        leased = stack.enter_context(
            self.cache.lease(model.config_source, model.config_sha256, CONFIG_MAX_BYTES)
        )
        clock.add("download", leased.fetch_seconds)
        return leased.path

    def _resident(
        self,
        stack: ExitStack,
        clock: StageClock,
        key: str,
        load: Callable[[], Any],
        expected_bytes: int,
    ) -> Any:
        entry = stack.enter_context(self.pool.use(key, load, expected_bytes=expected_bytes))
        clock.add("load", entry.load_seconds)
        return entry.value

    def _open_checkpoint(
        self, path: Path, config_dir: Path | None, *, refiner: bool = False
    ) -> Any:
        pipeline = open_checkpoint(
            path, device=self.device, dtype=self.dtype, config_dir=config_dir, refiner=refiner
        )
        if self._vae_needs_float32(getattr(pipeline, "text_encoder_2", None) is not None):
            keep_vae_float32(pipeline)
        return pipeline

    def _open_vae(self, path: Path, base: Any, is_sdxl: bool) -> Any:
        import torch

        dtype = torch.float32 if self._vae_needs_float32(is_sdxl) else self.dtype
        return open_vae(path, like=base.vae, device=self.device, dtype=dtype)

    def _vae_needs_float32(self, is_sdxl: bool) -> bool:
        import torch

        return is_sdxl and self.dtype == torch.float16 and self.settings.sdxl_vae_fp32

    def _lora_manager(self, key: str, pipeline: Any) -> LoraManager:
        manager = self._loras.get(key)
        if manager is None:
            manager = LoraManager(pipeline, max_parked=self.settings.max_parked_loras)
            self._loras[key] = manager
        return manager

    def _remember(self, key: str, residents: set[str], checkpoint: str, loras: set[str]) -> None:
        self._recent[key] = _ComboNeeds(frozenset(residents), checkpoint, frozenset(loras))
        self._recent.move_to_end(key)
        while len(self._recent) > RECENT_COMBOS:
            self._recent.popitem(last=False)

    def _evicted(self, key: str, _value: Any) -> None:
        self._loras.pop(key, None)


def _timed(clock: StageClock, undo: Callable[[], None]) -> None:
    with clock.stage("adapters"):
        undo()
