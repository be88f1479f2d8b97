"""What the model manager saves: switching LoRAs on a resident checkpoint versus reloading the
pipeline, and a cold start (disk to first image) versus a warm job.

On the tiny SD 1.5- and SDXL-shaped models (imagefleet.tiny_models), measured in one process:

- **reload**: opening the checkpoint's diffusers folder onto the device, what a worker without
  adapters would pay to switch to a LoRA baked into another checkpoint;
- **LoRA switch, parked**: a job's adapter stage (apply + undo) when it switches between two
  LoRAs that stay loaded on the resident checkpoint (the default, up to
  IMAGEFLEET_WORKER_MAX_PARKED_LORAS);
- **LoRA switch, cold**: the same with parking off, so every job reads its LoRA file, injects it
  and removes the adapter layers after;
- **cold start**: a fresh worker with the model already in its disk cache, from nothing resident
  to the first image; **from source**: the same with an empty disk cache (copy, sha256, load);
  **warm job**: the same image with everything resident.

Rounds alternate the measured operations, so load from elsewhere on a shared machine hits them
alike. Ratios are of medians measured in this same run.

    .venv/bin/python bench/models.py --rounds 10
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import torch

from imagefleet.hashing import path_sha256
from imagefleet.tiny_models.zoo import TinyZoo, build_zoo
from imagefleet.worker.engines.generation import generate
from imagefleet.worker.engines.model_manager import ModelManager
from imagefleet.worker.engines.model_specs import ModelSpec
from imagefleet.worker.engines.pipeline_loading import open_checkpoint
from imagefleet.worker.engines.timings import StageClock
from imagefleet.worker.model_cache import ModelCache
from imagefleet.worker.model_settings import ModelSettings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="Measured rounds per figure.")
    parser.add_argument("--warmup", type=int, default=2, help="Unmeasured rounds first.")
    parser.add_argument("--size", type=int, default=64, help="Image width and height.")
    parser.add_argument("--steps", type=int, default=2, help="Denoising steps per image.")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: default).")
    return parser.parse_args(argv)


@dataclass
class Samples:
    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        self.values.setdefault(name, []).append(seconds)

    def median(self, name: str) -> float:
        return statistics.median(self.values[name])

    def p90(self, name: str) -> float:
        ordered = sorted(self.values[name])
        return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def spec(path: Path, kind: str) -> ModelSpec:
    sha, size = path_sha256(path)
    return ModelSpec(path.name, sha, size, str(path), kind, kind)


def timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def image(manager: ModelManager, models: list[ModelSpec], args: argparse.Namespace) -> None:
    clock = StageClock()
    with manager.prepare(models, clock=clock) as ready:
        call = {
            "prompt": "a photo of the cat",
            "num_inference_steps": args.steps,
            "height": args.size,
            "width": args.size,
            "generator": torch.Generator().manual_seed(0),
        }
        generate(ready.pipeline, call, clock)


def adapter_seconds(manager: ModelManager, models: list[ModelSpec]) -> float:
    clock = StageClock()
    with manager.prepare(models, clock=clock):
        pass
    return clock.adapters_seconds


def measure(
    name: str, zoo: TinyZoo, work: Path, args: argparse.Namespace, samples: Samples
) -> None:
    folder = zoo.sd15 if name == "sd15" else zoo.sdxl
    loras = (
        [zoo.sd15_lora_peft, zoo.sd15_lora_other]
        if name == "sd15"
        else [zoo.sdxl_lora_peft, zoo.sdxl_lora_kohya]
    )
    checkpoint = spec(folder, "checkpoint")
    with_lora = [[checkpoint, spec(path, "lora")] for path in loras]
    device, dtype = torch.device("cpu"), torch.float32
    cache_root = work / f"{name}-cache"
    parked = ModelManager(ModelCache(cache_root), device="cpu")
    cold = ModelManager(
        ModelCache(cache_root, settings=ModelSettings(max_parked_loras=0)), device="cpu"
    )
    for round_ in range(args.warmup + args.rounds):
        record = round_ >= args.warmup
        results = {
            "reload": timed(lambda: open_checkpoint(folder, device=device, dtype=dtype)),
            "switch parked": adapter_seconds(parked, with_lora[round_ % 2]),
            "switch cold": adapter_seconds(cold, with_lora[round_ % 2]),
            "warm job": timed(lambda: image(parked, [checkpoint], args)),
        }
        fresh = ModelManager(ModelCache(cache_root), device="cpu")
        results["cold start"] = timed(partial(image, fresh, [checkpoint], args))
        empty = ModelManager(ModelCache(work / f"{name}-empty-{round_}"), device="cpu")
        results["from source"] = timed(partial(image, empty, [checkpoint], args))
        if record:
            for key, seconds in results.items():
                samples.add(f"{name} {key}", seconds)


def report(samples: Samples, args: argparse.Namespace) -> str:
    lines = [
        f"date {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"{args.rounds} rounds, {args.size}x{args.size}, {args.steps} steps",
        "",
        "| model | figure (seconds) | median | p90 |",
        "|---|---|---:|---:|",
    ]
    for name in samples.values:
        model, _, figure = name.partition(" ")
        lines.append(
            f"| {model} | {figure} | {samples.median(name):.4f} | {samples.p90(name):.4f} |"
        )
    lines.append("")
    for model in ("sd15", "sdxl"):
        reload = samples.median(f"{model} reload")
        warm = samples.median(f"{model} warm job")
        lines += [
            f"- {model}: reload / parked LoRA switch = "
            f"**{reload / samples.median(f'{model} switch parked'):.1f}x**; "
            f"reload / cold LoRA switch = "
            f"**{reload / samples.median(f'{model} switch cold'):.1f}x**; "
            f"cold start / warm job = {samples.median(f'{model} cold start') / warm:.1f}x, "
            f"from source / warm job = {samples.median(f'{model} from source') / warm:.1f}x",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    samples = Samples()
    with tempfile.TemporaryDirectory(prefix="imagefleet-bench-models-") as tmp:
        work = Path(tmp)
        zoo = build_zoo(work / "zoo")
        for name in ("sd15", "sdxl"):
            measure(name, zoo, work, args, samples)
    print(report(samples, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
