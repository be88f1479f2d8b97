"""What the fleet costs on top of the model: the demo model through the whole stack versus the
same pipeline called directly in one process.

Full stack: a real `imagefleet serve` process and one `imagefleet worker` process on this
machine; each job is submitted over HTTP, polled until it succeeds, and its PNG downloaded and
written to disk. Direct: `DiffusersEngine` in this process, same model folder, same parameters,
the PNG encoded and written the same way. Both are warmed up first (model fetched, loaded, first
call's lazy initialisation done), then the two kinds of run alternate job by job, so that a
burst of load from elsewhere on the machine hits both sides alike.

    .venv/bin/python bench/overhead.py --jobs 20 --size 128 --steps 3

Everything started here is stopped on exit, on error and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `tests.harness` when run as a script

from imagefleet.api_views import JobView  # noqa: E402
from imagefleet.client import ImageFleetClient  # noqa: E402
from imagefleet.protocol import JobStatus  # noqa: E402
from imagefleet.worker.png import encode_png  # noqa: E402
from tests.harness.fleet import Fleet, create_demo_model, create_key  # noqa: E402
from tests.harness.orchestrator import OrchestratorProcess  # noqa: E402
from tests.harness.processes import stop_all  # noqa: E402

STAGES = ("queue", "model load", "inference", "upload", "in no stage", "orchestrator total")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20, help="Measured jobs on each side.")
    parser.add_argument("--warmup", type=int, default=2, help="Unmeasured jobs on each side.")
    parser.add_argument("--size", type=int, default=128, help="Width and height (multiple of 8).")
    parser.add_argument("--steps", type=int, default=3, help="Denoising steps.")
    parser.add_argument("--scheduler", default="dpmpp_2m", help="Sampler name.")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads, both sides (0: torch's default). One is steadier on a small, "
        "shared CPU: spinning OpenMP threads stall badly when another process takes a core.",
    )
    parser.add_argument("--poll", type=float, default=0.05, help="Client poll interval in seconds.")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="Reuse this data dir (demo model and keys are created in it when missing); "
        "default: a temporary one, deleted afterwards.",
    )
    parser.add_argument("--json", type=Path, default=None, help="Also write raw figures here.")
    parser.add_argument(
        "--keep", action="store_true", help="Keep the scratch folder (logs, PNGs) afterwards."
    )
    return parser.parse_args(argv)


# --- child processes (the shared harness, tests/harness/) -------------------------------------


def _raise_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the `finally` that stops the children


def prepare_data_dir(data_dir: Path) -> tuple[str, str]:
    """Demo model and fresh keys; returns (client token, worker token)."""
    if not (data_dir / "models" / "demo" / "model_index.json").exists():
        create_demo_model(data_dir)
    client, worker = (
        create_key(data_dir, f"bench-{scope}", scope) for scope in ("client", "worker")
    )
    return client, worker


def start_stack(data_dir: Path, logs: Path, worker_key: str, threads: int) -> Fleet:
    """One orchestrator and one worker, in sessions of their own (a terminal's Ctrl-C reaches
    only this script, which stops them in order)."""
    orchestrator = OrchestratorProcess(logs, data_dir=data_dir, own_session=True)
    orchestrator.start()
    fleet = Fleet(
        logs,
        orchestrator,
        worker_key,
        node_prefix="bench-node",
        cache_dir=logs / "worker-cache",
        # A short long-poll only so that the worker exits quickly at the end: an idle
        # worker finishes its claim before it stops, and a submit wakes it either way.
        claim_wait=5.0,
        torch_threads=threads or None,
        own_session=True,
    )
    fleet.start_workers(1, timeout=120)
    return fleet


# --- the two sides -----------------------------------------------------------------------------


@dataclass
class Figures:
    direct_inference: list[float] = field(default_factory=list)
    direct_to_file: list[float] = field(default_factory=list)
    stack_to_file: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    cold_start: dict[str, float] = field(default_factory=dict)  # the first warm-up job


class Direct:
    """The pipeline the worker runs, called in this process with nothing around it."""

    def __init__(self, model_dir: Path, threads: int, out: Path) -> None:
        import torch

        from imagefleet.worker.engines.diffusers_engine import DiffusersEngine

        if threads:
            torch.set_num_threads(threads)
        self.engine = DiffusersEngine("cpu")
        self.engine.load("demo", model_dir)
        self.out = out

    def run(self, params: dict[str, Any]) -> tuple[float, float]:
        """(pipeline seconds, seconds until the PNG is on disk)."""
        from imagefleet.worker.engines.diffusers_engine import Txt2ImgRequest

        request = Txt2ImgRequest(
            prompt=params["prompt"],
            negative_prompt=None,
            width=params["width"],
            height=params["height"],
            steps=params["steps"],
            guidance_scale=7.0,
            seed=params["seed"],
            num_images=1,
            scheduler=params["scheduler"],
        )
        started = time.perf_counter()
        (generated,) = self.engine.txt2img(request, lambda *_: None, lambda: False)
        inferred = time.perf_counter()
        png = encode_png(generated.image, {**params, "guidance_scale": 7.0}, params["seed"], "-")
        (self.out / f"direct-{params['seed']}.png").write_bytes(png)
        return inferred - started, time.perf_counter() - started


def run_on_stack(
    client: ImageFleetClient, params: dict[str, Any], out: Path, poll: float
) -> tuple[float, JobView]:
    """Client-observed seconds from submit to the PNG written to disk, and the final job."""
    started = time.perf_counter()
    job = client.submit_txt2img(params)
    while not job.status.is_final:
        time.sleep(poll)
        job = client.get(job.id)
    if job.status is not JobStatus.succeeded:
        raise RuntimeError(f"job {job.id} ended {job.status.value}: {job.error}")
    (out / f"stack-{params['seed']}.png").write_bytes(client.download(job.id, 0))
    return time.perf_counter() - started, job


def stage_seconds(job: JobView) -> dict[str, float]:
    """The per-stage timings the API reports for a finished job, keyed like STAGES."""
    t = job.timings
    staged = [
        t.queue_seconds or 0.0,
        t.model_load_seconds or 0.0,
        # The pipeline call, VAE decode included (as the direct side times it); the worker
        # reports the decode apart since it measures it apart.
        (t.inference_seconds or 0.0) + (t.decode_seconds or 0.0),
        t.upload_seconds or 0.0,
    ]
    total = t.total_seconds or 0.0
    # What the stages leave out: claim -> model lookup, and upload done -> complete recorded.
    values = [*staged, total - sum(staged), total]
    return dict(zip(STAGES, values, strict=True))


# --- report ------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def row(name: str, values: list[float]) -> str:
    mean = statistics.fmean(values)
    return (
        f"| {name:<50} | {mean:8.3f} | {percentile(values, 0.5):8.3f} "
        f"| {percentile(values, 0.95):8.3f} |"
    )


def report(figures: Figures, args: argparse.Namespace) -> str:
    lines = [
        f"{args.jobs} jobs of {args.size}x{args.size}, {args.steps} steps, {args.scheduler}, "
        f"torch threads {args.threads or 'default'}, poll {args.poll}s",
        "",
        f"| {'stage (seconds)':<50} | {'mean':>8} | {'p50':>8} | {'p95':>8} |",
        f"|{'-' * 52}|{'-' * 10}|{'-' * 10}|{'-' * 10}|",
    ]
    for stage in STAGES:
        label = {
            "orchestrator total": "orchestrator total (submit -> completed)",
            "in no stage": "in no stage (total minus the four above)",
        }.get(stage, stage)
        lines.append(row(f"stack: {label}", figures.stages[stage]))
    lines.append(row("stack: client submit -> file on disk", figures.stack_to_file))
    lines.append(row("direct: pipeline call", figures.direct_inference))
    lines.append(row("direct: pipeline call -> file on disk", figures.direct_to_file))
    stack, direct = figures.stack_to_file, figures.direct_to_file
    lines += [
        "",
        f"overhead ratio (stack submit->file / direct call->file): "
        f"mean {statistics.fmean(stack) / statistics.fmean(direct):.2f}x, "
        f"p50 {percentile(stack, 0.5) / percentile(direct, 0.5):.2f}x",
        f"absolute overhead: mean "
        f"{statistics.fmean(stack) - statistics.fmean(direct):.3f}s per job",
    ]
    # Paired within each job, so unaffected by load that drifts between the two sides: all the
    # time the client waited beyond the pipeline call the worker itself timed.
    outside = [
        observed - inference
        for observed, inference in zip(stack, figures.stages["inference"], strict=True)
    ]
    lines += [
        f"stack time outside the pipeline call (client submit->file minus worker inference): "
        f"mean {statistics.fmean(outside):.3f}s, p50 {percentile(outside, 0.5):.3f}s, "
        f"p95 {percentile(outside, 0.95):.3f}s; as a ratio "
        f"{statistics.fmean(stack) / statistics.fmean(figures.stages['inference']):.2f}x",
    ]
    if figures.cold_start:
        cold = figures.cold_start
        lines.append(
            f"cold start (first warm-up job, not in the table): model fetch+load "
            f"{cold['model load']:.3f}s, submit->file {cold['client']:.3f}s"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    # Ctrl-C must unwind through the cleanup even when started with SIGINT ignored (a
    # background job of a non-interactive shell), so the handler is installed explicitly.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    scratch = Path(tempfile.mkdtemp(prefix="imagefleet-bench-"))
    data_dir = (args.data_dir or scratch / "data").resolve()
    out = scratch / "out"
    out.mkdir()
    succeeded = False
    try:
        print(f"preparing {data_dir} ...", flush=True)
        client_key, worker_key = prepare_data_dir(data_dir)
        fleet = start_stack(data_dir, scratch, worker_key, args.threads)
        url = fleet.url
        print(f"stack up at {url}; logs in {scratch}", flush=True)
        direct = Direct(data_dir / "models" / "demo", args.threads, out)
        figures = Figures()
        base = {
            "prompt": "a detailed photo of a red cat",
            "model": "demo",
            "width": args.size,
            "height": args.size,
            "steps": args.steps,
            "scheduler": args.scheduler,
        }
        with ImageFleetClient(url, client_key) as client:
            for index in range(args.warmup + args.jobs):
                params = {**base, "seed": 1000 + index}
                inference, to_file = direct.run(params)
                observed, job = run_on_stack(client, params, out, args.poll)
                if index == 0:
                    figures.cold_start = {**stage_seconds(job), "client": observed}
                if index < args.warmup:
                    continue
                figures.direct_inference.append(inference)
                figures.direct_to_file.append(to_file)
                figures.stack_to_file.append(observed)
                for stage, value in stage_seconds(job).items():
                    figures.stages[stage].append(value)
                print(
                    f"job {index - args.warmup + 1}/{args.jobs}: direct {to_file:.3f}s, "
                    f"stack {observed:.3f}s",
                    flush=True,
                )
        text = report(figures, args)
        print()
        print(text)
        print(
            f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"load average {os.getloadavg()}"
        )
        if args.json:
            args.json.write_text(json.dumps({"args": vars(args), **figures.__dict__}, default=str))
        succeeded = True
        return 0
    finally:
        stop_all(10.0)  # the worker before the orchestrator: it hands its job back on the way
        if succeeded and not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            print(f"logs and images kept in {scratch}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
