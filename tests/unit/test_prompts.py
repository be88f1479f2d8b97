"""Prompts as A1111 users write them: (word:1.3) weights and more than 77 tokens."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
    StableDiffusionPipeline,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from imagefleet.demo_model import (
    MAX_PROMPT_TOKENS,
    TEXT_WIDTH,
    build_demo_pipeline,
    save_demo_model,
)
from imagefleet.worker.engines.base import Txt2ImgRequest
from imagefleet.worker.engines.diffusers_engine import DiffusersEngine
from imagefleet.worker.engines.prompts import (
    ROUND_BRACKET_WEIGHT,
    SQUARE_BRACKET_WEIGHT,
    WeightedFragment,
    parse_weighted_prompt,
    prompt_embeddings,
    sdxl_embeddings,
)

# Over 77 tokens with the demo tokenizer (most words are spelled out letter by letter).
LONG_PROMPT = ", ".join(["a red cat on the blue city"] * 15)
SDXL_POOLED_WIDTH = 16


@pytest.fixture(autouse=True, scope="module")
def _one_cpu_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def pipeline() -> StableDiffusionPipeline:
    return build_demo_pipeline()


def _fragments(prompt: str) -> list[tuple[str, float]]:
    return [(f.text, round(f.weight, 6)) for f in parse_weighted_prompt(prompt)]


def test_plain_text_is_one_fragment_of_weight_one() -> None:
    assert parse_weighted_prompt("a photo of the cat") == [
        WeightedFragment("a photo of the cat", 1)
    ]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a (red:1.5) cat", [("a ", 1.0), ("red", 1.5), (" cat", 1.0)]),
        ("a ( red : 0.5 ) cat", [("a ", 1.0), (" red ", 0.5), (" cat", 1.0)]),
        ("(red)", [("red", ROUND_BRACKET_WEIGHT)]),
        ("((red))", [("red", round(ROUND_BRACKET_WEIGHT**2, 6))]),
        ("[red]", [("red", round(SQUARE_BRACKET_WEIGHT, 6))]),
        ("(a (b:2))", [("a ", ROUND_BRACKET_WEIGHT), ("b", round(2 * ROUND_BRACKET_WEIGHT, 6))]),
        ("a (red cat", [("a ", 1.0), ("red cat", ROUND_BRACKET_WEIGHT)]),
        (r"a \(literal\) \[x\] \\", [("a (literal) [x] \\", 1.0)]),
        ("ratio 16:9, (x:1.2.3)", [("ratio 16:9, ", 1.0), ("x:1.2.3)", ROUND_BRACKET_WEIGHT)]),
        ("stray ) and ]", [("stray ) and ]", 1.0)]),
        ("", [("", 1.0)]),
        ("( )", [("", 1.0)]),
    ],
)
def test_a1111_weighting_syntax_gives_each_fragment_its_weight(
    prompt: str, expected: list[tuple[str, float]]
) -> None:
    assert _fragments(prompt) == expected


def test_a_plain_short_prompt_encodes_exactly_as_the_pipeline_would(
    pipeline: StableDiffusionPipeline,
) -> None:
    ours = prompt_embeddings(pipeline, "a photo of the cat", "blurry")
    with torch.no_grad():
        theirs, theirs_negative = pipeline.encode_prompt(
            "a photo of the cat", torch.device("cpu"), 1, True, negative_prompt="blurry"
        )
    assert torch.equal(ours["prompt_embeds"], theirs)
    assert torch.equal(ours["negative_prompt_embeds"], theirs_negative)


def test_a_weight_changes_the_embeddings_of_the_weighted_words(
    pipeline: StableDiffusionPipeline,
) -> None:
    plain = prompt_embeddings(pipeline, "a red cat", None)["prompt_embeds"]
    stressed = prompt_embeddings(pipeline, "a (red:1.5) cat", None)["prompt_embeds"]
    softened = prompt_embeddings(pipeline, "a [red] cat", None)["prompt_embeds"]
    assert plain.shape == stressed.shape == softened.shape == (1, MAX_PROMPT_TOKENS, TEXT_WIDTH)
    assert not torch.allclose(plain, stressed)
    assert not torch.allclose(plain, softened)
    assert not torch.allclose(stressed, softened)


def test_a_long_prompt_is_encoded_in_77_token_chunks_and_nothing_is_dropped(
    pipeline: StableDiffusionPipeline,
) -> None:
    assert len(pipeline.tokenizer(LONG_PROMPT).input_ids) > MAX_PROMPT_TOKENS
    long = prompt_embeddings(pipeline, LONG_PROMPT, None)
    changed_tail = prompt_embeddings(pipeline, LONG_PROMPT + ", a dog", None)
    chunks = long["prompt_embeds"].shape[1] // MAX_PROMPT_TOKENS
    assert chunks >= 2
    assert long["prompt_embeds"].shape == (1, chunks * MAX_PROMPT_TOKENS, TEXT_WIDTH)
    assert long["negative_prompt_embeds"].shape == long["prompt_embeds"].shape
    assert not torch.allclose(
        long["prompt_embeds"][:, -MAX_PROMPT_TOKENS:],
        changed_tail["prompt_embeds"][:, -MAX_PROMPT_TOKENS:],
    )


def test_a_long_weighted_prompt_generates_an_image(tmp_path: Path) -> None:
    engine = DiffusersEngine(device="cpu")
    engine.load("demo", save_demo_model(tmp_path / "demo"))
    request = Txt2ImgRequest(
        prompt=f"(masterpiece:1.3), [blurry], {LONG_PROMPT}",
        negative_prompt="(ugly:1.2), " + LONG_PROMPT,
        width=64,
        height=64,
        steps=2,
        guidance_scale=5.0,
        seed=3,
        num_images=1,
        scheduler="euler",
    )
    [image] = engine.txt2img(request, lambda done, total: None, lambda: False)
    [short] = engine.txt2img(replace(request, prompt="a cat"), lambda d, t: None, lambda: False)
    assert image.image.size == (64, 64)
    assert image.image.tobytes() != short.image.tobytes()


def _sdxl_text_encoders() -> tuple[CLIPTextModel, CLIPTextModelWithProjection]:
    """Two tiny CLIP encoders shaped like SDXL's pair: the second one has a projection."""
    tokenizer = build_demo_pipeline().tokenizer
    config = {
        "hidden_size": TEXT_WIDTH,
        "intermediate_size": 37,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "vocab_size": 1000,
        "max_position_embeddings": MAX_PROMPT_TOKENS,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    torch.manual_seed(0)
    first = CLIPTextModel(CLIPTextConfig(**config))
    second = CLIPTextModelWithProjection(CLIPTextConfig(**config, projection_dim=SDXL_POOLED_WIDTH))
    return first, second


def test_sdxl_prompts_join_both_encoders_and_pool_the_second() -> None:
    tokenizer = build_demo_pipeline().tokenizer
    first, second = _sdxl_text_encoders()
    tokenizers, encoders = [tokenizer, tokenizer], [first, second]

    plain = sdxl_embeddings(tokenizers, encoders, "a red cat", None)
    stressed = sdxl_embeddings(tokenizers, encoders, "a (red:1.5) cat", "blurry")
    long = sdxl_embeddings(tokenizers, encoders, LONG_PROMPT, "blurry")

    assert plain["prompt_embeds"].shape == (1, MAX_PROMPT_TOKENS, 2 * TEXT_WIDTH)
    assert plain["pooled_prompt_embeds"].shape == (1, SDXL_POOLED_WIDTH)
    assert torch.count_nonzero(plain["negative_prompt_embeds"]) == 0
    assert torch.count_nonzero(plain["negative_pooled_prompt_embeds"]) == 0
    assert not torch.allclose(plain["prompt_embeds"], stressed["prompt_embeds"])
    assert torch.count_nonzero(stressed["negative_prompt_embeds"]) > 0
    assert long["prompt_embeds"].shape[1] % MAX_PROMPT_TOKENS == 0
    assert long["prompt_embeds"].shape[1] > MAX_PROMPT_TOKENS
    assert long["negative_prompt_embeds"].shape == long["prompt_embeds"].shape
    with torch.no_grad():
        ids = torch.tensor([tokenizer("a red cat", padding="max_length").input_ids])
        expected = torch.cat(
            [
                first(ids, output_hidden_states=True).hidden_states[-2],
                second(ids, output_hidden_states=True).hidden_states[-2],
            ],
            dim=-1,
        )
    assert torch.allclose(plain["prompt_embeds"], expected)
