"""Textual-inversion embeddings loaded with their trigger words for one job, then unloaded.

An embedding adds token vectors to a text encoder under a trigger word (several vectors become
``token``, ``token_1``, ...; diffusers expands the trigger in prompts). Files come in three
layouts, told apart by their keys: A1111's ``emb_params``, diffusers' ``{"<token>": vectors}``
and SDXL's ``clip_l``/``clip_g`` pair (one set per text encoder). After the job every added
token is removed again (``unload_textual_inversion``), so the next prompt tokenizes and encodes
exactly as before; on tiny test models the embedding table also shrinks to the tokenizer's real
size, which changes no encoded prompt.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class EmbeddingSpec:
    key: str  # the file's sha256
    path: Path  # a .safetensors file
    token: str | None  # the trigger word; None: the diffusers layout's own key


@dataclass(frozen=True)
class _Added:
    tokenizer: Any
    text_encoder: Any
    tokens: list[str]


@contextmanager
def embeddings_loaded(pipeline: Any, embeddings: Sequence[EmbeddingSpec]) -> Iterator[list[str]]:
    """Loads the embeddings for the block; yields their trigger words; unloads them after."""
    added: list[_Added] = []
    try:
        triggers = [_load(pipeline, spec, added) for spec in embeddings]
        yield triggers
    finally:
        for entry in reversed(added):
            pipeline.unload_textual_inversion(
                tokens=entry.tokens, tokenizer=entry.tokenizer, text_encoder=entry.text_encoder
            )


def _load(pipeline: Any, spec: EmbeddingSpec, added: list[_Added]) -> str:
    from safetensors.torch import load_file

    tensors = load_file(str(spec.path))
    pairs = _targets(pipeline, tensors, spec)
    token = spec.token or _diffusers_token(tensors, spec)
    for (tokenizer, text_encoder), vectors in pairs:
        before = set(tokenizer.added_tokens_encoder)
        try:
            pipeline.load_textual_inversion(
                vectors, token=token, tokenizer=tokenizer, text_encoder=text_encoder
            )
        except ValueError as exc:
            raise ValueError(f"embedding {spec.path.name} cannot be loaded: {exc}") from exc
        tokens = sorted(set(tokenizer.added_tokens_encoder) - before)
        added.append(_Added(tokenizer, text_encoder, tokens))
    return token


def _targets(pipeline: Any, tensors: dict[str, Any], spec: EmbeddingSpec) -> list[tuple[Any, Any]]:
    """(tokenizer, text encoder) pairs and the vectors each one takes."""
    first = (pipeline.tokenizer, pipeline.text_encoder)
    if {"clip_l", "clip_g"} <= tensors.keys():
        second = (getattr(pipeline, "tokenizer_2", None), getattr(pipeline, "text_encoder_2", None))
        if second[1] is None:
            raise ValueError(
                f"embedding {spec.path.name} is for SDXL (clip_l/clip_g), not this checkpoint"
            )
        return [(first, tensors["clip_l"]), (second, tensors["clip_g"])]
    if "emb_params" in tensors:
        return [(first, tensors["emb_params"])]
    if len(tensors) == 1:
        return [(first, next(iter(tensors.values())))]
    raise ValueError(
        f"embedding {spec.path.name} has keys {sorted(tensors)[:5]}: expected emb_params "
        "(A1111), one token (diffusers) or clip_l and clip_g (SDXL)"
    )


def _diffusers_token(tensors: dict[str, Any], spec: EmbeddingSpec) -> str:
    if len(tensors) == 1 and "emb_params" not in tensors:
        return next(iter(tensors))
    raise ValueError(f"embedding {spec.path.name} names no token: register it with a trigger word")
