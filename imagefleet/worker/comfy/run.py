"""What a node implementation may use while a graph runs (`GraphRun`), built-ins and plug-ins
alike: the job's prepared models, its input images, progress and cancellation, and where
output images go. A node never sees the worker's credentials or its HTTP client: input images
arrive through `input_image`, outputs leave through `save`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from imagefleet.worker.comfy.values import ClipHandle, ModelHandle, VaeHandle
from imagefleet.worker.engines.base import GenerationCancelled
from imagefleet.worker.handlers.base import InvalidJobInput

if TYPE_CHECKING:
    import torch
    from PIL import Image


class GraphRunError(InvalidJobInput):
    """A node cannot run with what the job provides (a final failure of the job)."""


@dataclass(frozen=True)
class SavedImages:
    node_id: str
    images: torch.Tensor  # IMAGE layout
    prefix: str
    type: str  # "output" (SaveImage) or "temp" (PreviewImage), as ComfyUI files them


@dataclass
class GraphRun:
    pipeline: Any  # the prepared combo's pipeline (LoRAs, VAE, ControlNet applied)
    is_sdxl: bool
    combo: frozenset[tuple[str, str]]  # (kind, registered model name) of the job's models
    load_input: Callable[[str], Image.Image]  # job input name -> image
    on_progress: Callable[[int, int], None]
    should_stop: Callable[[], bool]
    name_of: Callable[[str], str]  # a loader's model name as the registry knows it
    total_steps: int = 0
    done_steps: int = 0
    node_id: str = ""
    saved: list[SavedImages] = field(default_factory=list)
    input_names: Mapping[str, str] = field(default_factory=dict)  # node id -> job input

    def model(self) -> ModelHandle:
        return ModelHandle(self.pipeline, self.is_sdxl)

    def clip(self) -> ClipHandle:
        return ClipHandle(self.pipeline, self.is_sdxl)

    def vae(self) -> VaeHandle:
        return VaeHandle(self.pipeline.vae, self.pipeline.image_processor)

    def controlnet(self) -> Any:
        controlnet = getattr(self.pipeline, "controlnet", None)
        if controlnet is None:
            raise GraphRunError(f"node {self.node_id}: the job's combo has no ControlNet")
        return controlnet

    def vae_scale(self) -> int:
        return int(2 ** (len(self.pipeline.vae.config.block_out_channels) - 1))

    def require_model(self, kind: str, name: str) -> None:
        if (kind, self.name_of(name)) not in self.combo:
            raise GraphRunError(f"node {self.node_id}: {kind} {name!r} is not in the job's combo")

    def input_image(self, value: str) -> Image.Image:
        """The uploaded image a LoadImage-like node names (checked against its hash)."""
        name = self.input_names.get(self.node_id)
        if name is None:
            raise GraphRunError(f"node {self.node_id}: the job has no input image {value!r}")
        return self.load_input(name)

    def step(self) -> None:
        """One denoising step done: reports progress, stops if the job was cancelled."""
        self.done_steps += 1
        self.on_progress(self.done_steps, max(self.total_steps, self.done_steps))
        if self.should_stop():
            raise GenerationCancelled(f"cancelled at node {self.node_id}")

    def save(self, images: torch.Tensor, prefix: str, kind: str) -> None:
        self.saved.append(SavedImages(self.node_id, images, prefix, kind))
