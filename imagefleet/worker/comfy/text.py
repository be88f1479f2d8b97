"""CLIPTextEncode: text to a conditioning, with the prompt syntax of the built-in kinds
(weights like `(word:1.2)`, which ComfyUI reads the same way, and prompts past 77 tokens).

SD 1.x encodes with the last layer or, after CLIPSetLastLayer(-2), the penultimate one, each
through the final layer norm as ComfyUI does; SDXL uses both encoders' penultimate layers and
the second one's pooled embedding (ComfyUI's SDXL default; a CLIPSetLastLayer is ignored there).
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from compel import EmbeddingsProvider, ReturnedEmbeddingsType, SplitLongTextMode

from imagefleet.worker.comfy.values import ClipHandle, Conditioning
from imagefleet.worker.engines.components import clip_skip_compatible
from imagefleet.worker.engines.prompts import parse_weighted_prompt, sdxl_embeddings


def encode(clip: ClipHandle, text: str) -> Conditioning:
    pipeline = clip.pipeline
    if clip.is_sdxl:
        embeddings = sdxl_embeddings(
            [pipeline.tokenizer, pipeline.tokenizer_2],
            [pipeline.text_encoder, pipeline.text_encoder_2],
            text,
            "",
        )
        return Conditioning(embeddings["prompt_embeds"], embeddings["pooled_prompt_embeds"])
    returned = (
        ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NORMALIZED
        if clip.layer <= -2
        else ReturnedEmbeddingsType.LAST_HIDDEN_STATES_NORMALIZED
    )
    encoder = pipeline.text_encoder
    provider = EmbeddingsProvider(
        tokenizer=pipeline.tokenizer,
        text_encoder=encoder,
        truncate=False,
        returned_embeddings_type=returned,
        split_long_text_mode=SplitLongTextMode.PHRASES,
        device=encoder.device,
    )
    fragments = parse_weighted_prompt(text)
    with torch.inference_mode(), clip_skip_compatible(SimpleNamespace(text_encoder=encoder)):
        embeds = provider.get_embeddings_for_weighted_prompt_fragments(
            text_batch=[[f.text for f in fragments]],
            fragment_weights_batch=[[f.weight for f in fragments]],
            device=encoder.device,
        )
    return Conditioning(embeds)
