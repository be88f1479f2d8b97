"""What the UNet is conditioned on at each step: the captions' token states and, for SDXL, the
added conditioning (the pooled text embedding and the six size/crop time ids).

Frozen text encoders: every caption (and the class prompt) is encoded once at set-up and the
batch's rows are looked up at each step. Trained text encoders (LoRA adapters on them): only
the token ids are cached, and the batch is encoded at every step through the adapted encoders,
with gradients, so their adapters learn from the loss. For SDXL that means both encoders and
the pooled embedding too: it is the second encoder's projection, which its adapters change.

The encodings are those of the pipelines' own ``encode_prompt``: SD 1.x takes the text
encoder's last hidden states; SDXL the penultimate hidden states of both encoders side by side,
and the second encoder's projected pooled output. Training and generation then see the same
inputs. Everything here is deterministic, so a resumed run rebuilds the same caches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch

from imagefleet.training.dataset import DatasetManifest
from imagefleet.worker.training.components import Models
from imagefleet.worker.training.data import crop_geometry

# One token-id tensor per text encoder (one for SD 1.x, two for SDXL), (N, max length) each.
TokenIds = tuple[torch.Tensor, ...]


@dataclass
class Encoded:
    """Encoded prompts, one row each: token states, and SDXL's pooled embedding."""

    states: torch.Tensor
    pooled: torch.Tensor | None = None

    def rows(self, indices: list[int]) -> Encoded:
        return Encoded(self.states[indices], None if self.pooled is None else self.pooled[indices])

    def repeated(self, count: int) -> Encoded:
        """A one-prompt encoding as ``count`` rows (the class prompt, once per class image)."""
        pooled = None if self.pooled is None else self.pooled.expand(count, -1)
        return Encoded(self.states.expand(count, -1, -1), pooled)


class TextConditioning:
    """The conditioning of the instance captions and the class prompt, cached or per step."""

    def __init__(
        self,
        models: Models,
        dataset: DatasetManifest,
        class_prompt: str,
        resolution: int,
        device: torch.device,
        *,
        trained: bool,
    ) -> None:
        """``trained``: the text encoders carry adapters being trained, so nothing is encoded
        ahead. Call under the run's autocast, as the steps are."""
        self._models = models
        self._ids = prompt_ids(models, [item.caption for item in dataset.items], device)
        self._class_ids = prompt_ids(models, [class_prompt], device)
        self._cached: Encoded | None = None
        self._class_cached: Encoded | None = None
        if not trained:
            with torch.no_grad():
                self._cached = encode(models, self._ids)
                self._class_cached = encode(models, self._class_ids)
        self._time_ids: torch.Tensor | None = None
        self._class_time_ids: torch.Tensor | None = None
        if models.sdxl:
            # Class images are generated at the target size, uncropped.
            side = resolution
            self._time_ids = sdxl_time_ids(dataset, resolution, device)
            self._class_time_ids = torch.tensor(
                [[side, side, 0, 0, side, side]], dtype=torch.float32, device=device
            )

    def batch(
        self, indices: list[int], class_count: int, dtype: torch.dtype
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """(token states, SDXL's ``added_cond_kwargs`` or None) for the instance batch
        ``indices`` followed by ``class_count`` class images."""
        encoded = self._instances(indices)
        states, pooled = encoded.states, encoded.pooled
        if class_count:
            extra = self._classes(class_count)
            states = torch.cat([states, extra.states])
            if pooled is not None and extra.pooled is not None:
                pooled = torch.cat([pooled, extra.pooled])
        if self._time_ids is None or self._class_time_ids is None or pooled is None:
            return states, None
        time_ids = self._time_ids[indices]
        if class_count:
            time_ids = torch.cat([time_ids, self._class_time_ids.expand(class_count, -1)])
        return states, {"text_embeds": pooled.to(dtype), "time_ids": time_ids.to(dtype)}

    def _instances(self, indices: list[int]) -> Encoded:
        if self._cached is not None:
            return self._cached.rows(indices)
        return encode(self._models, tuple(ids[indices] for ids in self._ids))

    def _classes(self, count: int) -> Encoded:
        if self._class_cached is not None:
            return self._class_cached.repeated(count)
        return encode(self._models, tuple(ids.expand(count, -1) for ids in self._class_ids))


def prompt_ids(models: Models, prompts: list[str], device: torch.device) -> TokenIds:
    """The prompts' token ids for each text encoder, padded to its tokenizer's length."""
    tokenizers = [models.tokenizer]
    if models.tokenizer_2 is not None:
        tokenizers.append(models.tokenizer_2)
    ids = []
    for tokenizer in tokenizers:
        tokens = tokenizer(
            prompts,
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        ids.append(cast(torch.Tensor, tokens.input_ids).to(device))
    return tuple(ids)


def encode(models: Models, ids: TokenIds) -> Encoded:
    """Encodes token ids as the pipeline's ``encode_prompt`` does (see the module docstring);
    with gradients through any adapters unless the caller disables them."""
    if models.text_encoder_2 is None:
        hidden: torch.Tensor = models.text_encoder(ids[0])[0]
        return Encoded(hidden)
    states = []
    pooled = torch.empty(0)
    for encoder, encoder_ids in zip((models.text_encoder, models.text_encoder_2), ids, strict=True):
        output = encoder(encoder_ids, output_hidden_states=True)
        pooled = cast(torch.Tensor, output[0])  # the last encoder's: its projection
        states.append(output.hidden_states[-2])
    return Encoded(torch.cat(states, dim=-1), pooled)


def sdxl_time_ids(dataset: DatasetManifest, resolution: int, device: torch.device) -> torch.Tensor:
    """Each image's (original h, w, crop top, left, target h, w), as SDXL was trained with."""
    rows = [[*crop_geometry(item, resolution), resolution, resolution] for item in dataset.items]
    return torch.tensor(rows, dtype=torch.float32, device=device)
