"""LoRA training on the demo model: steps per second, and what checkpointing costs.

Three kinds of run of the same job (same seed, dataset and hyperparameters) alternate, so that
load from elsewhere on a shared machine hits all alike:

- **none**: no checkpoints (the baseline);
- **background**: a checkpoint every ``--checkpoint-every`` steps, handed to a callback that
  copies the folder into a local "store" and then waits ``--upload-seconds`` (a stand-in for an
  object-store upload), on the engine's background thread;
- **blocking**: the same checkpoints and the same callback, but the training thread waits for
  each hand-over to finish before its next step (what a naive implementation does), by
  blocking in the stop check until the checkpoint has been handed over.

Wall-clock time on a shared machine swings by tens of percent between runs, more than the
effect measured, so the overhead is read from CPU time as well: the training thread's CPU time
(what checkpointing takes from the steps themselves: the snapshot, and any lock contention) and
the whole process's (adding the writer thread's serialization and copying, which a CPU-only
trainer pays for on its cores). For the blocking kind, the time the training thread waited for
hand-overs is measured directly, within the run. Every figure is a median over rounds of a
ratio within one round (all three kinds back to back), with its min..max. Model loading and
caches are excluded: steps 2 to N are timed. The tiny model makes a step far cheaper than on a
GPU, so checkpoint costs appear larger here than they would in production.

    .venv/bin/python bench/training.py --steps 30 --checkpoint-every 10 --repeats 5
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import shutil
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from imagefleet.demo_model import save_demo_model
from imagefleet.training.dataset import DatasetManifest, load_instance_images
from imagefleet.training.params import LoraTrainingParams
from imagefleet.worker.training.engine import LoraTrainer
from imagefleet.worker.training.types import StepProgress

ARMS = ("none", "background", "blocking")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--checkpoint-every", type=int, default=10)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--upload-seconds", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=5, help="Rounds of the three kinds.")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: default).")
    parser.add_argument("--json", type=Path, default=None, help="Also write raw figures here.")
    return parser.parse_args(argv)


def dataset(count: int) -> DatasetManifest:
    rng = np.random.default_rng(0)
    images = []
    for index in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(buffer, "PNG")
        images.append((f"{index}.png", buffer.getvalue()))
    return load_instance_images(images, "a photo of sks cat")


class Upload:
    """The checkpoint callback: copy into the store, then wait as a network upload would."""

    def __init__(self, store: Path, seconds: float) -> None:
        self.store = store
        self.seconds = seconds
        self.handed = threading.Semaphore(0)
        self.count = 0

    def __call__(self, step: int, folder: Path) -> None:
        shutil.copytree(folder, self.store / f"step-{step}", dirs_exist_ok=True)
        time.sleep(self.seconds)
        self.count += 1
        self.handed.release()


def run_once(
    arm: str, args: argparse.Namespace, model: Path, data: DatasetManifest, scratch: Path
) -> dict[str, Any]:
    params = LoraTrainingParams(
        output_name="bench",
        steps=args.steps,
        resolution=args.resolution,
        rank=args.rank,
        batch_size=args.batch_size,
        seed=1,
        checkpoint_every=args.checkpoint_every,
    )
    work = Path(tempfile.mkdtemp(dir=scratch))
    (work / "store").mkdir()
    upload = Upload(work / "store", args.upload_seconds)
    stamps: list[tuple[float, float, float]] = []
    blocked = [0.0]

    def on_progress(progress: StepProgress) -> None:
        # On the training thread: wall clock, this thread's CPU time, the process's CPU time.
        stamps.append((time.perf_counter(), time.thread_time(), time.process_time()))

    def should_stop() -> None:
        # Asked before each step, right after the engine submitted the previous step's
        # checkpoint: the blocking kind waits here until that hand-over has finished.
        done = len(stamps)
        if arm == "blocking" and done and done % args.checkpoint_every == 0:
            waited = time.perf_counter()
            upload.handed.acquire()
            blocked[0] += time.perf_counter() - waited

    engine = LoraTrainer(model, params, data, base_model_sha256="0" * 64, work_dir=work)
    result = engine.train(
        on_progress=on_progress,
        should_stop=should_stop,
        on_checkpoint=None if arm == "none" else upload,
    )
    shutil.rmtree(work)
    (wall0, thread0, process0), (wall1, thread1, process1) = stamps[0], stamps[-1]
    return {
        "arm": arm,
        "train_seconds": result.train_seconds,
        "setup_seconds": result.setup_seconds,
        "checkpoints": upload.count,
        "wall": wall1 - wall0,  # steps 2..N, so that set-up never leaks in
        "thread_cpu": thread1 - thread0,
        "process_cpu": process1 - process0,
        "blocked": blocked[0],
    }


def _ratios(rounds: list[dict[str, dict[str, Any]]], arm: str, key: str) -> list[float]:
    return [100 * (r[arm][key] / r["none"][key] - 1) for r in rounds]


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):+.1f}% ({min(values):+.1f}..{max(values):+.1f})"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="imagefleet-bench-training-") as tmp:
        scratch = Path(tmp)
        model = save_demo_model(scratch / "demo")
        data = dataset(args.images)
        run_once("none", args, model, data, scratch)  # warm-up: lazy initialisation, caches
        rounds = [
            {arm: run_once(arm, args, model, data, scratch) for arm in ARMS}
            for _ in range(args.repeats)
        ]
    measured = args.steps - 1
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(
        f"{args.steps} steps at {args.resolution}px, rank {args.rank}, batch {args.batch_size}, "
        f"checkpoint every {args.checkpoint_every} steps, upload {args.upload_seconds} s; "
        f"{args.repeats} rounds of the three kinds back to back; medians over rounds "
        f"(min..max) of ratios within a round\n"
    )
    print("| checkpoints | hand-overs | steps/s (wall) | steps/s (CPU) | wall vs none |")
    print("|-------------|-----------:|---------------:|--------------:|-------------:|")
    for arm in ARMS:
        wall = statistics.median(r[arm]["wall"] for r in rounds)
        cpu = statistics.median(r[arm]["thread_cpu"] for r in rounds)
        print(
            f"| {arm:<11} | {max(r[arm]['checkpoints'] for r in rounds):>10} | "
            f"{measured / wall:>14.2f} | {measured / cpu:>13.2f} | "
            f"{_spread(_ratios(rounds, arm, 'wall'))} |"
        )
    blocking = [
        100 * r["blocking"]["blocked"] / (r["blocking"]["wall"] - r["blocking"]["blocked"])
        for r in rounds
    ]
    print(
        "\ncheckpointing overhead in % of training time:\n"
        f"- background, training thread CPU time vs none: "
        f"{_spread(_ratios(rounds, 'background', 'thread_cpu'))}\n"
        f"- background, whole process CPU time vs none (writer thread included): "
        f"{_spread(_ratios(rounds, 'background', 'process_cpu'))}\n"
        f"- blocking, time the training thread waited for hand-overs, within the run: "
        f"{_spread(blocking)}"
    )
    if args.json:
        record = {"args": {k: str(v) for k, v in vars(args).items()}, "rounds": rounds}
        args.json.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
