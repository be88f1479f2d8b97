"""What a real job costs beyond its pipeline call: the txt2img handler with the default engine
(ManagedEngine: combo leased from the disk cache, prepared, sampler set, prompts encoded, PNG
encoded) against the bare pipeline call (`generation.generate`) on the same resident checkpoint.

On the tiny SD 1.5-shaped model, everything resident and warm, measured in one process; rounds
alternate the two so load from elsewhere on a shared machine hits both alike:

- **bare call**: ``generate(pipeline, call)``: the denoising loop and the VAE decode only;
- **plain job**: the handler running a checkpoint-only assignment, end to end;
- **combo job**: the same with 2 LoRAs (parked after the first round), a VAE and an embedding.

"outside" is a job's wall time minus its own inference and decode seconds: the worker's overhead
around the pipeline (the goal on CPU: <= 50 ms). "CPU outside" is the same in CPU seconds of the
calling thread, where one torch thread does all the work: the plain job's CPU time minus the bare
call's of the same round. Unlike wall time it hardly moves when other processes load the
machine.

    .venv/bin/python bench/combo_jobs.py --rounds 10
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
from imagefleet.tiny_models.embedding import DEFAULT_TOKEN
from imagefleet.tiny_models.zoo import build_zoo
from imagefleet.worker.engines.generation import generate
from imagefleet.worker.engines.managed_engine import ManagedEngine
from imagefleet.worker.engines.model_specs import spec_from_ref
from imagefleet.worker.engines.prompts import prompt_embeddings
from imagefleet.worker.engines.timings import StageClock
from imagefleet.worker.handlers import load_handlers
from imagefleet.worker.handlers.base import JobContext
from imagefleet.worker.model_cache import ModelCache
from imagefleet.worker_protocol import Assignment, ModelRef

PROMPT = f"a photo of {DEFAULT_TOKEN} cat"
_HANDLERS = load_handlers()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="Measured rounds per figure.")
    parser.add_argument("--warmup", type=int, default=2, help="Unmeasured rounds first.")
    parser.add_argument("--size", type=int, default=64, help="Image width and height.")
    parser.add_argument("--steps", type=int, default=4, help="Denoising steps per image.")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: default).")
    return parser.parse_args(argv)


def ref(path: Path, role: ModelRole, weight: float | None = None) -> ModelRef:
    sha, size = path_sha256(path)
    return ModelRef(
        name=path.name,
        version=1,
        kind=ModelKind(role.model_kind.value),
        role=role,
        weight=weight,
        trigger_words=[DEFAULT_TOKEN] if role is ModelRole.embedding else [],
        source=str(path),
        sha256=sha,
        size_bytes=size,
    )


def job(
    engine: ManagedEngine, models: list[ModelRef], args: argparse.Namespace
) -> tuple[float, float, float, float]:
    """One txt2img assignment through the real handler: wall, inference + decode, adapter and
    thread CPU seconds."""
    assignment = Assignment(
        job_id="bench",
        attempt_id="bench",
        fencing_token=1,
        lease_seconds=60.0,
        lease_expires_at=datetime.now(UTC),
        kind="txt2img",
        params={
            "prompt": PROMPT,
            "model": "tiny",
            "steps": args.steps,
            "seed": 7,
            "width": args.size,
            "height": args.size,
        },
        models=models,
        combo_key=combo_key([(m.role, m.sha256) for m in models]),
    )
    ctx = JobContext(
        assignment=assignment,
        engine=engine,
        cache=engine.manager.cache,
        fetch=lambda url: b"",
        on_step=lambda done, total: None,
        should_stop=lambda: False,
    )
    handler = _HANDLERS["txt2img"]  # looked up once, as the worker does at start-up
    started, cpu = time.perf_counter(), time.thread_time()
    handler.run(ctx)
    wall, cpu = time.perf_counter() - started, time.thread_time() - cpu
    return wall, ctx.seconds["inference"] + ctx.seconds["decode"], ctx.seconds["adapter"], cpu


def bare(
    engine: ManagedEngine, models: list[ModelRef], args: argparse.Namespace
) -> tuple[float, float]:
    """The pipeline call alone, on the prepared (resident) checkpoint: wall and thread CPU
    seconds."""
    with engine.manager.prepare([spec_from_ref(m) for m in models]) as ready:
        call = {
            **prompt_embeddings(ready.pipeline, PROMPT, None),
            "num_inference_steps": args.steps,
            "guidance_scale": 7.0,
            "width": args.size,
            "height": args.size,
            "generator": torch.Generator().manual_seed(7),
        }
        started, cpu = time.perf_counter(), time.thread_time()
        generate(ready.pipeline, call, StageClock())
        return time.perf_counter() - started, time.thread_time() - cpu


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    samples: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="imagefleet-bench-combo-") as tmp:
        zoo = build_zoo(Path(tmp) / "zoo")
        engine = ManagedEngine("cpu", cache=ModelCache(Path(tmp) / "cache"))
        plain = [ref(zoo.sd15, ModelRole.checkpoint)]
        combo = [
            *plain,
            ref(zoo.sd15_lora_peft, ModelRole.lora, 0.8),
            ref(zoo.sd15_lora_other, ModelRole.lora, 0.5),
            ref(zoo.sd15_vae, ModelRole.vae),
            ref(zoo.sd15_embedding_a1111, ModelRole.embedding),
        ]
        for round_ in range(args.warmup + args.rounds):
            bare_wall, bare_cpu = bare(engine, plain, args)
            figures = {"bare call": bare_wall}
            wall, pipeline, _, cpu = job(engine, plain, args)
            figures.update({"plain job": wall, "plain job outside": wall - pipeline})
            figures["plain job CPU outside"] = cpu - bare_cpu
            wall, pipeline, adapters, _ = job(engine, combo, args)
            figures["combo job"] = wall
            figures["combo job outside"] = wall - pipeline
            figures["combo adapters"] = adapters
            if round_ >= args.warmup:
                for name, seconds in figures.items():
                    samples.setdefault(name, []).append(seconds)
    median = {name: statistics.median(values) for name, values in samples.items()}
    print(
        f"date {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.rounds} rounds, "
        f"{args.size}x{args.size}, {args.steps} steps, load average {os.getloadavg()}\n"
    )
    print("| figure | median (ms) | max (ms) |\n|---|---:|---:|")
    for name, values in samples.items():
        print(f"| {name} | {median[name] * 1e3:.1f} | {max(values) * 1e3:.1f} |")
    print(
        f"\n- plain job / bare call = {median['plain job'] / median['bare call']:.2f}x; "
        f"combo job / bare call = {median['combo job'] / median['bare call']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
