"""Prompt text to text embeddings: A1111's weighting syntax, and prompts past CLIP's 77 tokens.

People write prompts the way the A1111 web UI taught them: ``(word:1.3)`` to stress a word,
``(word)`` for x1.1, ``[word]`` for /1.1, ``\\(`` for a literal bracket, and often far more than
the 75 words' worth of tokens CLIP reads at once. Left to diffusers, the brackets would be read
as text and everything past token 77 silently dropped. Here the syntax is parsed into weighted
fragments (``parse_weighted_prompt``, pure), and compel turns those into embeddings: it encodes
long prompts in 77-token chunks (split at a comma or full stop where it can, as A1111 does)
and applies each fragment's weight. The engine hands the result to the pipeline as
``prompt_embeds`` / ``negative_prompt_embeds`` (and the pooled embeddings SDXL also needs).

A prompt with no weights and no more than 75 tokens gives exactly the embeddings the pipeline
would have computed itself, so plain prompts keep their images.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from compel import EmbeddingsProvider, ReturnedEmbeddingsType, SplitLongTextMode

# A1111's multipliers for one level of round or square brackets.
ROUND_BRACKET_WEIGHT = 1.1
SQUARE_BRACKET_WEIGHT = 1 / 1.1

_PROMPT_TOKEN = re.compile(
    r"""
      \\[()\[\]\\]              # an escaped bracket or backslash: literal text
    | \(                        # opens a weighted group
    | \[                        # opens a down-weighted group
    | :\s*(?P<weight>[+-]?[.\d]+)\s*\)  # ":1.3)" closes a round group with its weight
    | \)
    | \]
    | [^\\()\[\]:]+             # plain text
    | [\\:]                     # a lone backslash or colon: literal text
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class WeightedFragment:
    text: str
    weight: float


def parse_weighted_prompt(prompt: str) -> list[WeightedFragment]:
    """Splits A1111-syntax text into fragments with their weights, adjacent equal ones merged.

    Brackets that never close weigh the rest of the prompt, as in A1111; a ``:x)`` whose
    number does not parse, and a closing bracket with nothing open, are kept as text. Text
    that is only whitespace is dropped: it has no tokens to weigh.
    """
    texts: list[str] = []
    weights: list[float] = []
    open_round: list[int] = []
    open_square: list[int] = []

    def scale(start: int, factor: float) -> None:
        for index in range(start, len(weights)):
            weights[index] *= factor

    for match in _PROMPT_TOKEN.finditer(prompt):
        token, weight = match.group(0), _as_float(match.group("weight"))
        if len(token) == 2 and token[0] == "\\":
            texts.append(token[1])
            weights.append(1.0)
        elif token == "(":
            open_round.append(len(texts))
        elif token == "[":
            open_square.append(len(texts))
        elif weight is not None and open_round:
            scale(open_round.pop(), weight)
        elif token == ")" and open_round:
            scale(open_round.pop(), ROUND_BRACKET_WEIGHT)
        elif token == "]" and open_square:
            scale(open_square.pop(), SQUARE_BRACKET_WEIGHT)
        else:
            texts.append(token)
            weights.append(1.0)
    for start in open_round:
        scale(start, ROUND_BRACKET_WEIGHT)
    for start in open_square:
        scale(start, SQUARE_BRACKET_WEIGHT)
    return _merged(texts, weights)


def _as_float(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:  # "1.2.3" or "."
        return None


def _merged(texts: list[str], weights: list[float]) -> list[WeightedFragment]:
    """Joins neighbours of equal weight, then drops whitespace between differently weighted
    fragments (fragments are tokenized one by one, so it separates nothing)."""
    joined = _join_equal(WeightedFragment(t, w) for t, w in zip(texts, weights, strict=True))
    fragments = _join_equal(f for f in joined if f.text.strip())
    return fragments or [WeightedFragment("", 1.0)]


def _join_equal(fragments: Iterable[WeightedFragment]) -> list[WeightedFragment]:
    joined: list[WeightedFragment] = []
    for fragment in fragments:
        if joined and joined[-1].weight == fragment.weight:
            joined[-1] = WeightedFragment(joined[-1].text + fragment.text, fragment.weight)
        else:
            joined.append(fragment)
    return joined


def prompt_embeddings(
    pipeline: Any, prompt: str, negative_prompt: str | None, clip_skip: int | None = None
) -> dict[str, torch.Tensor]:
    """The keyword arguments that replace ``prompt``/``negative_prompt`` in a pipeline call.

    SDXL-family pipelines (a second text encoder, pooled embeddings) and SD 1.x/2.x ones are
    told apart by their components, as diffusers itself builds them. ``clip_skip`` is A1111's
    (1: the last layer; 2: the one before, normalised, as anime-style SD 1.5 checkpoints
    expect); SDXL already reads the penultimate layer and takes no clip skip.
    """
    skip = 1 if clip_skip is None else clip_skip
    if skip not in (1, 2):
        raise ValueError(f"clip skip {clip_skip} is not supported: use 1 or 2")
    if getattr(pipeline, "text_encoder_2", None) is not None:
        if skip != 1:
            raise ValueError("SDXL reads the penultimate CLIP layer already: drop clip_skip")
        zero_negative = negative_prompt is None and bool(
            pipeline.config.get("force_zeros_for_empty_prompt", False)
        )
        return sdxl_embeddings(
            [pipeline.tokenizer, pipeline.tokenizer_2],
            [pipeline.text_encoder, pipeline.text_encoder_2],
            prompt,
            None if zero_negative else (negative_prompt or ""),
        )
    return sd_embeddings(
        pipeline.tokenizer, pipeline.text_encoder, prompt, negative_prompt, penultimate=skip == 2
    )


def sd_embeddings(
    tokenizer: Any,
    text_encoder: Any,
    prompt: str,
    negative_prompt: str | None,
    *,
    penultimate: bool = False,
) -> dict[str, torch.Tensor]:
    """SD 1.x/2.x: the last hidden state of the one CLIP text encoder, 77 tokens per chunk.

    The negative prompt is always encoded here (an absent one as the empty prompt, which is
    what the pipeline would use): the pipeline would otherwise tokenize it to the positive
    prompt's length, which a long prompt makes longer than CLIP's position table.
    """
    returned = (
        ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NORMALIZED
        if penultimate
        else ReturnedEmbeddingsType.LAST_HIDDEN_STATES_NORMALIZED
    )
    provider = _provider(tokenizer, text_encoder, returned)
    with torch.no_grad(), _flat_encoder_compatible(text_encoder):
        positive = _weighted(provider, prompt)
        negative = _weighted(provider, negative_prompt or "")
        positive, negative = _same_length(provider, positive, negative)
    return {"prompt_embeds": positive, "negative_prompt_embeds": negative}


def sdxl_embeddings(
    tokenizers: list[Any], text_encoders: list[Any], prompt: str, negative_prompt: str | None
) -> dict[str, torch.Tensor]:
    """SDXL: both encoders' penultimate hidden states side by side, plus the second encoder's
    pooled projection; ``negative_prompt`` None gives the zero embeddings SDXL pipelines use
    for "no negative prompt" (their ``force_zeros_for_empty_prompt``).

    Either encoder may be absent (an SDXL refiner has only the second); the pooled embedding
    comes from the last one present, which is the one with a projection. Pooled embeddings
    read one chunk: they summarise the prompt, and SDXL was trained on 77 tokens of it.
    """
    present = [(t, e) for t, e in zip(tokenizers, text_encoders, strict=True) if e is not None]
    if not present:
        raise ValueError("an SDXL pipeline without text encoders cannot encode prompts")
    providers = [
        _provider(t, e, ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED)
        for t, e in present
    ]
    with torch.no_grad():
        positive = _side_by_side(providers, prompt)
        pooled = _pooled(providers[-1], prompt)
        if negative_prompt is None:
            negative, negative_pooled = torch.zeros_like(positive), torch.zeros_like(pooled)
        else:
            negative = _side_by_side(providers, negative_prompt)
            negative_pooled = _pooled(providers[-1], negative_prompt)
            positive, negative = _same_length(providers[0], positive, negative, _empty_z(providers))
    return {
        "prompt_embeds": positive,
        "negative_prompt_embeds": negative,
        "pooled_prompt_embeds": pooled,
        "negative_pooled_prompt_embeds": negative_pooled,
    }


def _provider(
    tokenizer: Any, text_encoder: Any, returned: ReturnedEmbeddingsType
) -> EmbeddingsProvider:
    return EmbeddingsProvider(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        truncate=False,
        returned_embeddings_type=returned,
        split_long_text_mode=SplitLongTextMode.PHRASES,
        device=text_encoder.device,
    )


def _weighted(provider: EmbeddingsProvider, text: str) -> torch.Tensor:
    fragments = parse_weighted_prompt(text)
    embeddings: torch.Tensor = provider.get_embeddings_for_weighted_prompt_fragments(
        text_batch=[[f.text for f in fragments]],
        fragment_weights_batch=[[f.weight for f in fragments]],
        device=provider.device,
    )
    return embeddings


def _side_by_side(providers: list[EmbeddingsProvider], text: str) -> torch.Tensor:
    """Each encoder's embeddings of the text, padded to one length, joined feature-wise."""
    parts = [_weighted(provider, text) for provider in providers]
    longest = max(part.shape[1] for part in parts)
    padded = [
        _pad_to(part, provider.empty_z, longest)
        for part, provider in zip(parts, providers, strict=True)
    ]
    return torch.cat(padded, dim=-1)


def _empty_z(providers: list[EmbeddingsProvider]) -> torch.Tensor:
    """One chunk of the empty prompt, in the joined feature layout of ``_side_by_side``."""
    return torch.cat([provider.empty_z for provider in providers], dim=-1)


def _pooled(provider: EmbeddingsProvider, text: str) -> torch.Tensor:
    plain = " ".join(fragment.text for fragment in parse_weighted_prompt(text))
    pooled: torch.Tensor = provider.get_pooled_embeddings([plain], device=provider.device)
    return pooled


def _same_length(
    provider: EmbeddingsProvider,
    positive: torch.Tensor,
    negative: torch.Tensor,
    empty: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pads the shorter of the two with empty-prompt chunks, as A1111 does, so that
    classifier-free guidance can batch them."""
    longest = max(positive.shape[1], negative.shape[1])
    if positive.shape[1] == negative.shape[1]:
        return positive, negative  # the usual case: no empty-prompt encode needed
    padding = provider.empty_z if empty is None else empty
    return _pad_to(positive, padding, longest), _pad_to(negative, padding, longest)


def _pad_to(embeddings: torch.Tensor, empty: torch.Tensor, length: int) -> torch.Tensor:
    while embeddings.shape[1] < length:
        embeddings = torch.cat([embeddings, empty.to(embeddings.device)], dim=1)
    return embeddings


@contextmanager
def _flat_encoder_compatible(text_encoder: Any) -> Iterator[None]:
    """compel normalises the penultimate layer through ``text_model.final_layer_norm``, which
    transformers 5's flattened CLIPTextModel no longer has (see components.py)."""
    if hasattr(text_encoder, "text_model") or not hasattr(text_encoder, "final_layer_norm"):
        yield
        return
    object.__setattr__(text_encoder, "text_model", text_encoder)
    try:
        yield
    finally:
        del text_encoder.__dict__["text_model"]
