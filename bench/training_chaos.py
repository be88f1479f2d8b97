"""Training under chaos: tiny train_lora jobs on local worker processes that are SIGKILLed at
random, then what it cost.

The fleet is real (tests/harness/fleet.py): one `imagefleet serve` and --workers `imagefleet
worker` processes on this machine, the demo model as the base, 3 s leases reaped every 0.5 s.
Every --kill-every seconds on average (exponential gaps) one worker that is claiming gets
SIGKILL and a replacement is started (at least one claiming worker is always spared). A killed
attempt's lease expires, the job is requeued, and the next attempt resumes from the newest
checkpoint the orchestrator recorded.

Reported: completed / total; interruptions and the steps they cost, per interruption (goal: at
most --checkpoint-every, the checkpoint interval); checkpoint files left in storage after every
job finished (goal: none, only the LoRAs); lease seconds and cost at the configured price; wall
time; and for up to 4 interrupted jobs, whether their LoRA equals (within 1e-5) an
uninterrupted in-process run of the same job. Separately, in process and in the same run, the
checkpointing overhead: one job's
training time with checkpoints handed to a background upload (a copy of each folder, standing
in for the HTTP upload) against the same job without, as a percentage of the latter.

    .venv/bin/python bench/training_chaos.py --jobs 12           # the figures in docs
    .venv/bin/python bench/training_chaos.py --jobs 100          # the issue's run

Exit status: 0 when every job succeeded and no checkpoint is left, 1 otherwise.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `tests.*` when run as a script

from imagefleet.client import ImageFleetClient  # noqa: E402
from imagefleet.protocol import JobStatus  # noqa: E402
from imagefleet.training_protocol import TrainingView  # noqa: E402
from tests.harness.fleet import Fleet, create_demo_model, create_key  # noqa: E402
from tests.harness.orchestrator import OrchestratorProcess  # noqa: E402
from tests.harness.processes import child_env  # noqa: E402
from tests.training_jobs import dataset_zip  # noqa: E402

PRICE_PER_HOUR = 0.02  # USD for a "cpu" worker: only to show the arithmetic


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--checkpoint-every", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--kill-every", type=float, default=10.0, help="Mean seconds.")
    parser.add_argument("--lease", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--overhead-repeats", type=int, default=3)
    parser.add_argument(
        "--overhead-only",
        action="store_true",
        help="Only the checkpoint overhead part (no fleet): one job with and without checkpoints.",
    )
    return parser.parse_args()


def job_params(args: argparse.Namespace, index: int, dataset: str) -> dict[str, Any]:
    return {
        "output_name": f"chaos-lora-{index}",
        "base_model": "demo",
        "dataset": dataset,
        "instance_prompt": "a photo of sks cat",
        "steps": args.steps,
        "resolution": args.resolution,
        "rank": 4,
        "learning_rate": 1e-3,
        "seed": args.seed + index,
        "checkpoint_every": args.checkpoint_every,
        "keep_last": 2,
    }


def run_fleet(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    data_dir = scratch / "data"
    logs = scratch / "logs"
    logs.mkdir(parents=True)
    create_demo_model(data_dir)
    client_key = create_key(data_dir, "chaos-client", "client")
    worker_key = create_key(data_dir, "chaos-worker", "worker")
    env = child_env(
        IMAGEFLEET_DATA_DIR=str(data_dir),
        IMAGEFLEET_LEASE_SECONDS=str(args.lease),
        IMAGEFLEET_REAPER_INTERVAL_SECONDS="0.5",
        IMAGEFLEET_RATE_LIMIT_PER_SECOND="0",
        IMAGEFLEET_MAX_ATTEMPTS="30",
        IMAGEFLEET_RETRY_BACKOFF_SECONDS="0",
        IMAGEFLEET_SAME_NODE_RETRY_DELAY_SECONDS="0",
        IMAGEFLEET_GPU_PRICES=f'{{"cpu": {PRICE_PER_HOUR}}}',
    )
    fleet = Fleet(
        logs,
        OrchestratorProcess(logs, env=env),
        worker_key,
        node_prefix="train-node",
        cache_dir=data_dir / "worker-cache",
        worker_args=["--device", "cpu"],
        own_session=True,
    )
    rng = random.Random(args.seed)
    kills = 0
    try:
        fleet.orchestrator.start()
        fleet.start_workers(args.workers)
        started = time.monotonic()
        with ImageFleetClient(fleet.url, client_key) as client:
            dataset = client.upload_input(dataset_zip(), "application/zip").id
            ids = [
                client.submit("train_lora", job_params(args, i, dataset)).id
                for i in range(args.jobs)
            ]
            next_kill = started + rng.expovariate(1 / args.kill_every)
            pending = set(ids)
            while pending and time.monotonic() - started < args.timeout:
                time.sleep(0.5)
                pending = {i for i in pending if not client.get(i).status.is_final}
                for worker in [w for w in fleet.workers if not w.running]:
                    fleet.retire(worker)
                    fleet.spawn_worker()
                if time.monotonic() >= next_kill:
                    ready = fleet.ready_workers()
                    if len(ready) >= 2:
                        fleet.retire(rng.choice(ready))
                        fleet.spawn_worker()
                        kills += 1
                    next_kill = time.monotonic() + rng.expovariate(1 / args.kill_every)
            wall = time.monotonic() - started
            views = [client.training(i) for i in ids]
            interrupted = {
                index: client.download(job_id, 0)
                for index, (job_id, view) in enumerate(zip(ids, views, strict=True))
                if view.interruptions_survived and view.status is JobStatus.succeeded
            }
    finally:
        fleet.stop()
    artifacts = data_dir / "artifacts"
    files = [p for p in artifacts.rglob("*") if p.is_file()]
    left = [p for p in files if "checkpoints" in p.parts]
    loras = [p for p in files if p.suffix == ".safetensors" and "models" not in p.parts]
    return {
        "views": views,
        "interrupted_loras": interrupted,
        "kills": kills,
        "wall": wall,
        "checkpoint_files_left": len(left),
        "checkpoint_bytes_left": sum(p.stat().st_size for p in left),
        "lora_bytes": sum(p.stat().st_size for p in loras),
    }


def equal_to_uninterrupted(
    args: argparse.Namespace, scratch: Path, loras: dict[int, bytes], limit: int = 4
) -> tuple[int, int]:
    """How many of (up to `limit`) interrupted jobs' LoRAs equal, within 1e-5, an
    uninterrupted in-process run of the same job (same demo weights, dataset and seed)."""
    import torch
    from safetensors.torch import load

    from imagefleet.demo_model import save_demo_model
    from imagefleet.training.dataset import load_zip_dataset
    from imagefleet.training.params import LoraTrainingParams
    from imagefleet.worker.training.engine import LoraTrainer

    torch.set_num_threads(1)
    demo = save_demo_model(scratch / "reference-demo")
    dataset = load_zip_dataset(dataset_zip(), instance_prompt="a photo of sks cat")
    equal = 0
    chosen = sorted(loras)[:limit]
    for index in chosen:
        fields = job_params(args, index, "0")
        fields.pop("base_model")
        fields.pop("dataset")
        params = LoraTrainingParams.model_validate(fields)
        work = scratch / f"reference-{index}"
        result = LoraTrainer(demo, params, dataset, base_model_sha256="0" * 64, work_dir=work)
        expected = load(result.train().lora_path.read_bytes())
        trained = load(loras[index])
        equal += trained.keys() == expected.keys() and all(
            torch.allclose(trained[name], tensor, rtol=1e-5, atol=1e-7)
            for name, tensor in expected.items()
        )
    return equal, len(chosen)


def checkpoint_overhead(args: argparse.Namespace, scratch: Path) -> tuple[float, float]:
    """What background checkpoints add to one job's training, in %: (wall time, the training
    thread's CPU time), each the median over rounds of a ratio within one round. Set-up (model
    load, latent caches) is excluded from both (the engine's train_seconds; the CPU time of the
    same thread includes set-up on both sides, so its ratio understates slightly)."""
    import torch

    from imagefleet.demo_model import save_demo_model
    from imagefleet.training.dataset import load_zip_dataset
    from imagefleet.training.params import LoraTrainingParams
    from imagefleet.worker.training.engine import LoraTrainer

    torch.set_num_threads(1)
    demo = save_demo_model(scratch / "overhead-demo")
    dataset = load_zip_dataset(dataset_zip(), instance_prompt="a photo of sks cat")
    fields = job_params(args, 0, "0")
    fields.pop("base_model")
    fields.pop("dataset")
    params = LoraTrainingParams.model_validate(fields)
    store = scratch / "overhead-store"

    def upload(step: int, folder: Path) -> None:
        shutil.copytree(folder, store / f"{time.monotonic_ns()}-{step}")

    runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for repeat in range(args.overhead_repeats):
        for checkpoints in (False, True):
            work = scratch / f"overhead-{repeat}-{checkpoints}"
            trainer = LoraTrainer(demo, params, dataset, base_model_sha256="0" * 64, work_dir=work)
            cpu = time.thread_time()
            result = trainer.train(on_checkpoint=upload if checkpoints else None)
            runs[checkpoints].append((result.train_seconds, time.thread_time() - cpu))
    wall = [
        with_[0] / without[0] - 1 for without, with_ in zip(runs[False], runs[True], strict=True)
    ]
    thread = [
        with_[1] / without[1] - 1 for without, with_ in zip(runs[False], runs[True], strict=True)
    ]
    return 100 * statistics.median(wall), 100 * statistics.median(thread)


def report(
    args: argparse.Namespace,
    fleet: dict[str, Any],
    overhead: tuple[float, float],
    equal: tuple[int, int],
) -> bool:
    views: list[TrainingView] = fleet["views"]
    done = sum(1 for v in views if v.status is JobStatus.succeeded)
    interruptions = sum(v.interruptions_survived for v in views)
    lost = sum(v.steps_lost for v in views)
    billed = sum(v.billable_seconds for v in views)
    cost = sum(v.cost or 0.0 for v in views)
    wall_overhead, cpu_overhead = overhead
    outcomes = Counter(a.outcome.value for v in views for a in v.attempts[:-1])
    rows = [
        ("jobs completed / total", f"{done} / {len(views)}"),
        ("workers, SIGKILLs", f"{args.workers}, {fleet['kills']}"),
        ("interruptions survived", str(interruptions)),
        (
            "attempts before the last, by outcome",
            ", ".join(f"{k} {n}" for k, n in sorted(outcomes.items())) or "none",
        ),
        (
            "steps lost per interruption (mean)",
            f"{lost / interruptions:.2f} (interval {args.checkpoint_every})"
            if interruptions
            else "n/a",
        ),
        (
            "interrupted jobs equal to an uninterrupted run",
            f"{equal[0]} / {equal[1]} (LoRA tensors within 1e-5)",
        ),
        (
            "checkpoint files left after completion",
            f"{fleet['checkpoint_files_left']} ({fleet['checkpoint_bytes_left']} bytes)",
        ),
        ("LoRA outputs in storage", f"{fleet['lora_bytes']} bytes"),
        (f"lease seconds, cost at ${PRICE_PER_HOUR:.2f}/h", f"{billed:.1f} s, ${cost:.6f}"),
        ("wall time", f"{fleet['wall']:.1f} s"),
        (
            "checkpoint overhead, wall | training-thread CPU",
            f"{wall_overhead:+.1f}% | {cpu_overhead:+.1f}% (median of {args.overhead_repeats})",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    print(
        f"training chaos: {args.jobs} jobs x {args.steps} steps at {args.resolution}px, "
        f"checkpoint every {args.checkpoint_every}, kill every {args.kill_every:g}s on average"
    )
    for name, value in rows:
        print(f"  {name.ljust(width)}  {value}")
    return done == len(views) and fleet["checkpoint_files_left"] == 0 and equal[0] == equal[1]


def main() -> int:
    args = parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="imagefleet-training-chaos-"))
    try:
        if args.overhead_only:
            wall, thread = checkpoint_overhead(args, scratch)
            print(
                f"checkpoint overhead ({args.steps} steps, every {args.checkpoint_every}; "
                f"median of {args.overhead_repeats}): wall {wall:+.1f}%, "
                f"training-thread CPU {thread:+.1f}%"
            )
            return 0
        fleet = run_fleet(args, scratch)
        equal = equal_to_uninterrupted(args, scratch, fleet["interrupted_loras"])
        overhead = checkpoint_overhead(args, scratch)
        return 0 if report(args, fleet, overhead, equal) else 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
