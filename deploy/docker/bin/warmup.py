"""Worker warm-up: prove that this machine can run a diffusion pipeline before claiming work.

On a community GPU cloud a node may arrive with a broken driver, a GPU that faults on first use
or too little memory to load anything; finding that out in the first job costs that job a lease
and counts a failure against the node. The warm-up runs the tiny random-weight demo pipeline
(imagefleet.demo_model: the genuine SD 1.5 pipeline code at a few MB, built in memory, nothing
downloaded) for a few steps on the worker's device, and exits non-zero with the reason when that
fails, so the container restarts, or its provider reallocates the node, before any job is
touched. On a GPU it also pays CUDA's start-up (context, kernel loading) before the first claim.

The worker images run it from their entrypoint when IMAGEFLEET_WORKER_WARMUP=1; it reads
IMAGEFLEET_WORKER_DEVICE, the worker's own device setting (unset: cuda if present, else cpu).
"""

from __future__ import annotations

import os
import sys
import time

DEVICE_ENV = "IMAGEFLEET_WORKER_DEVICE"
SIZE = 64
STEPS = 2


def pick_device(requested: str | None) -> str:
    """The worker's rule: the requested device, else cuda when torch sees one, else cpu."""
    import torch

    if requested:
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(
                f"{DEVICE_ENV}={requested} but torch sees no CUDA device (torch "
                f"{torch.__version__}, built for CUDA {torch.version.cuda}): check that the "
                "container runs with GPU access (--gpus / the nvidia runtime) and that the host "
                "driver supports this CUDA version"
            )
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def warm_up(device: str) -> float:
    """Runs the demo pipeline on `device` and returns the seconds it took."""
    import torch

    from imagefleet.demo_model import build_demo_pipeline

    started = time.perf_counter()
    pipeline = build_demo_pipeline().to(torch.device(device))
    pipeline.set_progress_bar_config(disable=True)
    generator = torch.Generator(device="cpu").manual_seed(0)
    result = pipeline(
        "warm-up",
        width=SIZE,
        height=SIZE,
        num_inference_steps=STEPS,
        generator=generator,
        output_type="np",
    )
    if result.images.shape != (1, SIZE, SIZE, 3):
        raise RuntimeError(f"warm-up produced images of shape {result.images.shape}")
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> int:
    try:
        device = pick_device(os.environ.get(DEVICE_ENV) or None)
        seconds = warm_up(device)
    except Exception as exc:
        print(f"warm-up failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"warm-up: the demo pipeline ran {STEPS} steps at {SIZE}px on {device} in {seconds:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
