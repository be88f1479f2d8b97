"""Micro-batching's throughput: 4 compatible txt2img jobs as one pipeline call against the same
4 jobs one by one, through the worker's real handlers and default engine (ManagedEngine), on the
tiny SD 1.5-shaped model, resident and warm, in one process. Rounds alternate the two so load
from elsewhere on a shared machine hits both alike; figures are medians.

- **batch 1**: each job through the txt2img handler (`handler.run`), one after another;
- **batch N**: the same jobs through `run_txt2img_batch` (one `generate_batch` call).

Jobs differ in prompt and seed, as real batch mates do (same size, steps and sampler).

    .venv/bin/python bench/micro_batching.py --rounds 5 --batch 4
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from imagefleet.hashing import path_sha256
from imagefleet.kinds.base import combo_key
from imagefleet.protocol import ModelKind, ModelRole
from imagefleet.tiny_models.zoo import build_zoo
from imagefleet.worker.engines.managed_engine import ManagedEngine
from imagefleet.worker.handlers import load_handlers
from imagefleet.worker.handlers.base import JobContext
from imagefleet.worker.handlers.batched import run_txt2img_batch
from imagefleet.worker.model_cache import ModelCache
from imagefleet.worker_protocol import Assignment, ModelRef

PROMPTS = ("a photo of the cat", "a red lighthouse", "a bowl of fruit", "a city at night")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="Measured rounds per figure.")
    parser.add_argument("--warmup", type=int, default=1, help="Unmeasured rounds first.")
    parser.add_argument("--batch", type=int, default=4, help="Jobs per micro-batch.")
    parser.add_argument("--size", type=int, default=64, help="Image width and height.")
    parser.add_argument("--steps", type=int, default=4, help="Denoising steps per image.")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: default).")
    return parser.parse_args(argv)


def contexts(engine: ManagedEngine, model: ModelRef, args: argparse.Namespace) -> list[JobContext]:
    made = []
    for index in range(args.batch):
        assignment = Assignment(
            job_id=f"bench-{index}",
            attempt_id=f"bench-{index}",
            fencing_token=1,
            lease_seconds=60.0,
            lease_expires_at=datetime.now(UTC),
            kind="txt2img",
            params={
                "prompt": PROMPTS[index % len(PROMPTS)],
                "model": "tiny",
                "steps": args.steps,
                "seed": 100 + index,
                "width": args.size,
                "height": args.size,
            },
            models=[model],
            combo_key=combo_key([(model.role, model.sha256)]),
        )
        made.append(
            JobContext(
                assignment=assignment,
                engine=engine,
                cache=engine.manager.cache,
                fetch=lambda url: b"",
                on_step=lambda done, total: None,
                should_stop=lambda: False,
            )
        )
    return made


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    handler = load_handlers()["txt2img"]
    samples: dict[str, list[float]] = {"batch 1": [], f"batch {args.batch}": []}
    with tempfile.TemporaryDirectory(prefix="imagefleet-bench-batch-") as tmp:
        zoo = build_zoo(Path(tmp) / "zoo")
        engine = ManagedEngine("cpu", cache=ModelCache(Path(tmp) / "cache"))
        sha, size = path_sha256(zoo.sd15)
        model = ModelRef(
            name="tiny",
            version=1,
            kind=ModelKind.checkpoint,
            role=ModelRole.checkpoint,
            source=str(zoo.sd15),
            sha256=sha,
            size_bytes=size,
        )
        for round_ in range(args.warmup + args.rounds):
            started = time.perf_counter()
            for ctx in contexts(engine, model, args):
                handler.run(ctx)
            one = time.perf_counter() - started
            started = time.perf_counter()
            run_txt2img_batch(contexts(engine, model, args), lambda d, t: None, lambda: False)
            batched = time.perf_counter() - started
            if round_ >= args.warmup:
                samples["batch 1"].append(one)
                samples[f"batch {args.batch}"].append(batched)
    print(
        f"date {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, load "
        f"{os.getloadavg()[0]:.1f}, {args.rounds} rounds, {args.batch} jobs, "
        f"{args.size}x{args.size}, {args.steps} steps\n"
    )
    print("| mode | median s for the jobs | images/s |\n|---|---:|---:|")
    rates = {}
    for name, values in samples.items():
        median = statistics.median(values)
        rates[name] = args.batch / median
        print(f"| {name} | {median:.3f} | {rates[name]:.2f} |")
    ratio = rates[f"batch {args.batch}"] / rates["batch 1"]
    print(f"\n- batch {args.batch} / batch 1 throughput = {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
