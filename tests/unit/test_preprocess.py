"""The preprocess kind: canny edges with numpy and PIL on any worker, and its output feeding a
ControlNet generation job."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from imagefleet.kinds import get_kind
from imagefleet.kinds.base import InputInfo, Limits
from imagefleet.protocol import ModelRole
from imagefleet.worker.annotators import canny
from imagefleet.worker.engines.managed_engine import ManagedEngine
from imagefleet.worker.model_cache import ModelCache
from tests.combo_jobs import Job, checkpoint, ref
from tests.tiny_zoo import difference, tiny_zoo


@pytest.fixture(autouse=True, scope="module")
def _one_cpu_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def square(size: int = 64) -> Image.Image:
    image = Image.new("RGB", (size, size), (0, 0, 0))
    image.paste((255, 255, 255), (16, 16, 48, 48))
    return image


def test_canny_finds_the_outline_of_a_square_and_nothing_else() -> None:
    edges = np.asarray(canny(square()).convert("L")) > 0
    assert edges.shape == (64, 64)
    # The outline: near x or y = 16 / 48, within the square's extent; flat areas stay black.
    assert edges[32, 14:19].any() and edges[32, 46:51].any()
    assert edges[14:19, 32].any() and edges[46:51, 32].any()
    assert not edges[24:40, 24:40].any() and not edges[:8].any() and not edges[:, :8].any()
    # One pixel thin across the edge (non-maximum suppression), not a smeared band.
    assert edges[32, 10:22].sum() <= 2
    # A high threshold above every gradient leaves no edge.
    assert not (np.asarray(canny(square(), 1500, 1500)) > 0).any()


def test_preprocess_params_are_checked_at_admission() -> None:
    spec = get_kind("preprocess")
    with pytest.raises(ValueError, match="low_threshold"):
        spec.parse({"image": "ab", "low_threshold": 300, "high_threshold": 200})
    params = spec.parse({"image": "ab"})
    info = {"image": InputInfo("ab", "image/png", 4096, 4096)}
    with pytest.raises(Exception, match="pixels"):
        spec.admit(params, Limits(max_pixels=1024 * 1024), info)
    assert [need.name for need in spec.requirements(params).inputs] == ["image"]


def test_a_canny_map_from_a_preprocess_job_feeds_a_controlnet_job(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    engine = ManagedEngine("cpu", cache=ModelCache(tmp_path_factory.mktemp("cache")))
    edges = Job(engine, [], kind="preprocess", inputs={"image": square()})
    assert edges.ctx.seconds["inference"] > 0
    control = Image.open(io.BytesIO(edges.outputs[0].data))
    assert control.size == (64, 64)
    controlnet = ref(tiny_zoo().sd15_controlnet, ModelRole.controlnet, 1.0)
    plain = Job(engine, [checkpoint()]).image
    steered = Job(engine, [checkpoint(), controlnet], inputs={"control_image": control}).image
    assert difference(steered, plain) > 0.1


def test_a_depth_map_from_a_registered_depth_model_feeds_a_controlnet_job(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from imagefleet.tiny_models.depth import save_tiny_depth

    depth_dir = save_tiny_depth(tmp_path_factory.mktemp("depth") / "depth")
    engine = ManagedEngine("cpu", cache=ModelCache(tmp_path_factory.mktemp("cache")))
    depth = ref(depth_dir, ModelRole.annotator)
    made = Job(engine, [depth], kind="preprocess", inputs={"image": square()}, annotator="depth")
    assert made.ctx.seconds["inference"] > 0
    control = Image.open(io.BytesIO(made.outputs[0].data))
    assert control.size == (64, 64)
    grey = np.asarray(control.convert("L"))
    assert grey.min() == 0 and grey.max() == 255  # normalised to the full range
    again = Job(engine, [depth], kind="preprocess", inputs={"image": square()}, annotator="depth")
    assert np.array_equal(again.pixels[0], made.pixels[0])  # deterministic, model kept loaded
    controlnet = ref(tiny_zoo().sd15_controlnet, ModelRole.controlnet, 1.0)
    plain = Job(engine, [checkpoint()]).image
    steered = Job(engine, [checkpoint(), controlnet], inputs={"control_image": control}).image
    assert difference(steered, plain) > 0.1
