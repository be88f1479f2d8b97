"""img2img and inpaint on the real tiny demo model (CPU)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from imagefleet.demo_model import save_demo_model
from imagefleet.worker.engines.base import Img2ImgRequest, InpaintRequest
from imagefleet.worker.engines.compositing import paste_unmasked
from imagefleet.worker.engines.diffusers_engine import DiffusersEngine

SIZE = 64
FIELDS = dict(
    prompt="a red fox",
    negative_prompt=None,
    width=SIZE,
    height=SIZE,
    steps=20,
    guidance_scale=5.0,
    seed=7,
    num_images=1,
    scheduler="ddim",
)


@pytest.fixture(autouse=True, scope="module")
def _one_cpu_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> DiffusersEngine:
    engine = DiffusersEngine()
    engine.load("demo", save_demo_model(tmp_path_factory.mktemp("demo") / "pipeline"))
    return engine


def gradient() -> Image.Image:
    x = np.linspace(0, 255, SIZE, dtype=np.uint8)
    rgb = np.stack(
        [
            np.tile(x, (SIZE, 1)),
            np.tile(x[:, None], (1, SIZE)),
            np.full((SIZE, SIZE), 128, np.uint8),
        ],
        axis=-1,
    )
    return Image.fromarray(rgb, "RGB")


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float64)


def vae_roundtrip(engine: DiffusersEngine, image: Image.Image, seed: int) -> Image.Image:
    """What the model's own VAE makes of the image with no denoising at all, drawing the
    latents from its posterior with the job's seed as the pipeline does."""
    pipeline = engine._require_pipeline()
    processor = pipeline.image_processor  # type: ignore[attr-defined]
    vae = pipeline.vae  # type: ignore[attr-defined]
    with torch.no_grad():
        posterior = vae.encode(processor.preprocess(image)).latent_dist
        latents = posterior.sample(generator=torch.Generator().manual_seed(seed))
        decoded = vae.decode(latents).sample
    result: Image.Image = processor.postprocess(decoded, output_type="pil")[0]
    return result


def img2img(engine: DiffusersEngine, strength: float) -> Image.Image:
    request = Img2ImgRequest(**FIELDS, init_image=gradient(), strength=strength)
    return engine.img2img(request, lambda done, total: None, lambda: False)[0].image


def test_img2img_with_strength_near_zero_returns_almost_the_input(
    engine: DiffusersEngine,
) -> None:
    """Near 0 only the last, nearly noise-free step runs: the output is what the model's VAE
    reconstructs of the input (the demo VAE has random weights, so that is not the input's
    pixels), several times closer to it than a full-strength run is."""
    reference = pixels(vae_roundtrip(engine, gradient(), FIELDS["seed"]))  # type: ignore[arg-type]
    gentle = np.abs(pixels(img2img(engine, 0.05)) - reference).mean()
    strong = np.abs(pixels(img2img(engine, 1.0)) - reference).mean()
    assert strong > 3 * gentle


def test_img2img_is_reproducible_from_its_seed(engine: DiffusersEngine) -> None:
    assert np.array_equal(pixels(img2img(engine, 0.5)), pixels(img2img(engine, 0.5)))


def test_inpainting_leaves_pixels_away_from_the_mask_unchanged(engine: DiffusersEngine) -> None:
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (16, 16, 48, 48))
    request = InpaintRequest(**FIELDS, init_image=gradient(), strength=1.0, mask=mask, mask_blur=2)
    steps: list[int] = []
    out = engine.inpaint(request, lambda done, total: steps.append(done), lambda: False)[0].image
    before, after = pixels(gradient()), pixels(out)
    outside = np.ones((SIZE, SIZE), dtype=bool)
    outside[16 - 8 : 48 + 8, 16 - 8 : 48 + 8] = False  # the mask plus a margin of 4 blur radii
    assert np.array_equal(after[outside], before[outside])
    assert np.abs(after[20:44, 20:44] - before[20:44, 20:44]).mean() > 10  # repainted inside
    assert steps and out.size == (SIZE, SIZE)


def test_pasting_keeps_black_areas_exactly_and_takes_white_ones() -> None:
    init = Image.new("RGB", (8, 8), (10, 20, 30))
    generated = Image.new("RGB", (8, 8), (200, 100, 50))
    mask = Image.new("L", (8, 8), 0)
    mask.paste(255, (0, 0, 4, 8))
    out = np.asarray(paste_unmasked(generated, init, mask, blur=0))
    assert (out[:, :4] == (200, 100, 50)).all() and (out[:, 4:] == (10, 20, 30)).all()
