"""Pre- and post-processing plug-ins in real jobs: a prompt translator before generation, a tiny
safety classifier (built by the tests) after it, recorded in each PNG's metadata."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from imagefleet.worker.engines.managed_engine import ManagedEngine
from imagefleet.worker.model_cache import ModelCache
from imagefleet.worker.model_settings import ModelSettings
from imagefleet.worker.plugins import PluginError
from imagefleet.worker.png import read_parameters
from tests.combo_jobs import PROMPT, Job, checkpoint


@pytest.fixture(autouse=True, scope="module")
def _one_cpu_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> ModelCache:
    return ModelCache(tmp_path_factory.mktemp("cache"))


def engine_with(cache: ModelCache, **plugins: str) -> ManagedEngine:
    settings = ModelSettings(**plugins)
    return ManagedEngine("cpu", cache=ModelCache(cache.root, settings=settings))


def test_the_safety_filter_replaces_flagged_images_and_says_so(cache_root: ModelCache) -> None:
    flagging = engine_with(cache_root, safety_filter="tests.plugin_support:FlagsBrightImages")
    flagged = Job(flagging, [checkpoint()], safety_filter=True, num_images=2)
    assert all(not image.any() for image in flagged.pixels)  # black
    assert read_parameters(flagged.outputs[1].data)["safety_filtered"] is True
    unasked = Job(flagging, [checkpoint()])
    assert unasked.image.any() and "safety_filtered" not in read_parameters(unasked.outputs[0].data)
    passing = engine_with(cache_root, safety_filter="tests.plugin_support:FlagsNothing")
    passed = Job(passing, [checkpoint()], safety_filter=True)
    assert np.array_equal(passed.image, unasked.image)
    assert read_parameters(passed.outputs[0].data)["safety_filtered"] is False
    with pytest.raises(PluginError, match="has none"):
        Job(engine_with(cache_root), [checkpoint()], safety_filter=True)


def test_a_prompt_rewriter_runs_before_generation(cache_root: ModelCache) -> None:
    english = Job(engine_with(cache_root), [checkpoint()], prompt=PROMPT)
    translating = engine_with(cache_root, prompt_rewriter="tests.plugin_support:FrenchToEnglish")
    french = Job(translating, [checkpoint()], prompt="une photo de le chat")
    assert np.array_equal(french.image, english.image)
    meta = read_parameters(french.outputs[0].data)
    assert (meta["prompt"], meta["rewritten_prompt"]) == ("une photo de le chat", PROMPT)
