"""The client's pure parts: the retry decision and the server-sent events reader; and the
A1111 mapping of prompts, samplers and model titles."""

from __future__ import annotations

import pytest

from imagefleet.client import RetryPolicy
from imagefleet.client.retry import retry_delay
from imagefleet.client.sse import parse_events
from imagefleet.compat.a1111_mapping import model_name, round_side, sampler_for, split_loras
from imagefleet.errors import InvalidField


def test_the_retry_decision_honours_retry_after_and_gives_up() -> None:
    policy = RetryPolicy(max_retries=3, base_seconds=1.0, max_seconds=10.0)
    assert retry_delay(policy, 429, "2", 0) == 2.0
    assert retry_delay(policy, 503, "600", 0) == 10.0  # capped
    assert retry_delay(policy, 503, "Thu, 01 Jan 1970 00:00:00 GMT", 0) == 0.0  # in the past
    backoff = retry_delay(policy, 503, None, 2)
    assert backoff is not None and 3.2 <= backoff <= 4.8  # 1 s doubled twice, with jitter
    assert retry_delay(policy, 503, "1", 3) is None  # retries used up
    assert retry_delay(policy, 500, "1", 0) is None  # not a refusal: never resent


def test_the_event_reader_joins_data_lines_skips_comments_and_keeps_ids() -> None:
    lines = ["retry: 1000", "", ": keepalive", "id: 7", "event: progress", "data: {", "data: }", ""]
    (event,) = list(parse_events(lines))
    assert (event.id, event.event, event.data) == ("7", "progress", "{\n}")


def test_loras_written_in_the_prompt_become_the_jobs_loras() -> None:
    split = split_loras("a castle <lora:ghost:0.5>, at night <lora:Film Grain>")
    assert split.prompt == "a castle , at night"
    assert split.loras == [
        {"name": "ghost", "weight": 0.5},
        {"name": "Film Grain", "weight": 1.0},
    ]


def test_a1111_samplers_schedulers_and_titles_map_to_ours() -> None:
    assert sampler_for("DPM++ 2M", "karras", ("body",)) == "dpmpp_2m_karras"
    assert sampler_for("Euler a", "automatic", ("body",)) == "euler_ancestral"
    assert sampler_for(None, None, ("body",)) == "euler_ancestral"
    with pytest.raises(InvalidField):
        sampler_for("Euler", "karras", ("body",))  # no Karras variant here
    assert model_name("demo@2 [0123abcdef]") == "demo@2"
    assert model_name("v1-5-pruned.safetensors") == "v1-5-pruned"
    assert round_side(70) == 64
