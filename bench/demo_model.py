"""What the README's tour costs on a CPU: the demo model's UNet step and VAE decode, timed.

The tour is `imagefleet submit ... --width 576 --height 1024 --steps 20` on the demo model. This
times, in this process, one denoising step (the UNet with classifier-free guidance, batch 2) and
one VAE decode:

- at the tour's 576x1024, the demo model with one torch thread (the baseline) and with two,
  on this 2-core machine (what `imagefleet up` chooses for its workers is one);
- at 128x256, the demo model against the demo model as it was before (a two-level VAE that
  downscaled by 2 and a two-level UNet with attention at half the latent size), built here from
  its old config. The old model is not timed at the tour's size: its UNet's self-attention runs
  over 36,864 positions there and its VAE's over 147,456, minutes a step on a CPU.

The variants alternate run by run, so that load from elsewhere on the machine hits them alike;
the table gives medians and the ratio of each to its baseline.

    .venv/bin/python bench/demo_model.py --runs 5
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

from imagefleet.demo_model import TEXT_WIDTH, build_demo_pipeline

TOUR_SIZE = (576, 1024)
SMALL_SIZE = (128, 256)


def old_unet() -> UNet2DConditionModel:
    """The demo UNet before the VAE had SD's scale factor (kept here only as the baseline)."""
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_WIDTH,
        norm_num_groups=32,
    )


def old_vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
    )


def timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    with torch.no_grad():
        call()
    return time.perf_counter() - started


Variant = tuple[tuple[int, int], Any, Any, int, int]  # size, unet, vae, vae scale, threads


def measure(
    size: tuple[int, int], unet: Any, vae: Any, scale: int, threads: int
) -> tuple[float, float]:
    """Seconds for one guided UNet step and for one VAE decode at `size` (width, height)."""
    torch.set_num_threads(threads)
    width, height = size
    latent = torch.randn(2, 4, height // scale, width // scale)
    text = torch.randn(2, 77, TEXT_WIDTH)
    step = timed(lambda: unet(latent, 500, encoder_hidden_states=text))
    decode = timed(lambda: vae.decode(latent[:1]))
    return step, decode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="Measured runs of each variant.")
    args = parser.parse_args()

    demo = build_demo_pipeline()
    scale = demo.vae_scale_factor
    old = (old_unet(), old_vae())
    # name -> (variant, the name of its baseline)
    variants: dict[str, tuple[Variant, str]] = {
        "576x1024, demo model, 1 thread": ((TOUR_SIZE, demo.unet, demo.vae, scale, 1), ""),
        "576x1024, demo model, 2 threads": (
            (TOUR_SIZE, demo.unet, demo.vae, scale, 2),
            "576x1024, demo model, 1 thread",
        ),
        "128x256, demo model, 1 thread": ((SMALL_SIZE, demo.unet, demo.vae, scale, 1), ""),
        "128x256, old demo model (VAE /2), 1 thread": (
            (SMALL_SIZE, *old, 2, 1),
            "128x256, demo model, 1 thread",
        ),
    }
    for variant, _ in variants.values():  # warm-up: lazy initialisation
        measure(*variant)
    steps: dict[str, list[float]] = {name: [] for name in variants}
    decodes: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.runs):
        for name, (variant, _) in variants.items():
            step, decode = measure(*variant)
            steps[name].append(step)
            decodes[name].append(decode)

    def tour(name: str) -> float:
        return 20 * statistics.median(steps[name]) + statistics.median(decodes[name])

    print(f"median of {args.runs} runs, {platform.processor() or 'cpu'}")
    print("| variant | UNet step (s) | VAE decode (s) | 20 steps + decode (s) | vs baseline |")
    print("|---|---|---|---|---|")
    for name, (_, baseline) in variants.items():
        ratio = f"{tour(name) / tour(baseline):.1f}x" if baseline else "baseline"
        print(
            f"| {name} | {statistics.median(steps[name]):.3f} | "
            f"{statistics.median(decodes[name]):.3f} | {tour(name):.1f} | {ratio} |"
        )


if __name__ == "__main__":
    main()
