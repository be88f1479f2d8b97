"""Tiny random textual-inversion embeddings in the layouts community files use.

An embedding is a handful of new token vectors bound to a trigger word. Three layouts exist:

- **a1111**: ``{"emb_params": [vectors, width]}`` (what A1111 writes as .safetensors; its .pt
  files keep the same tensor under ``string_to_param``);
- **diffusers**: ``{"<token>": [vectors, width]}`` (``learned_embeds.safetensors``), where the
  key is the trigger;
- **sdxl**: ``{"clip_l": [vectors, 768], "clip_g": [vectors, 1280]}``, one set per text encoder.

The vectors are scaled to several times the norm of the encoder's own token embeddings, so a
prompt with the trigger gives a visibly different image on a tiny model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

EmbeddingLayout = Literal["a1111", "diffusers", "sdxl"]
DEFAULT_TOKEN = "<tiny-style>"


def embedding_vectors(text_encoder: Any, *, seed: int, vectors: int, strength: float) -> Any:
    """[vectors, width] random vectors, ``strength`` times the encoder's mean token norm."""
    import torch

    table = text_encoder.get_input_embeddings().weight.detach()
    scale = table.norm(dim=1).mean() * strength
    generator = torch.Generator().manual_seed(seed)
    raw = torch.randn(vectors, table.shape[1], generator=generator)
    return (raw / raw.norm(dim=1, keepdim=True) * scale).contiguous()


def write_embedding(
    pipeline: Any,
    dest: Path,
    *,
    layout: EmbeddingLayout,
    seed: int,
    token: str = DEFAULT_TOKEN,
    vectors: int = 2,
    strength: float = 3.0,
) -> Path:
    """Writes an embedding for the pipeline's text encoder(s) as one .safetensors file."""
    from safetensors.torch import save_file

    if layout == "sdxl":
        tensors = {
            "clip_l": embedding_vectors(
                pipeline.text_encoder, seed=seed, vectors=vectors, strength=strength
            ),
            "clip_g": embedding_vectors(
                pipeline.text_encoder_2, seed=seed + 1, vectors=vectors, strength=strength
            ),
        }
    else:
        key = "emb_params" if layout == "a1111" else token
        tensors = {
            key: embedding_vectors(
                pipeline.text_encoder, seed=seed, vectors=vectors, strength=strength
            )
        }
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dest), metadata={"format": "pt"})
    return dest
