"""Images per second and per dollar: a bare diffusers loop against the imagefleet stack, SD 1.5-
and SDXL-architecture models with random weights.

For every case (SD 1.5 and SDXL at 512x512 and 1024x1024, 30 steps; SDXL at 1216x896 with
base 20 + refiner 15 steps, as in the published consumer-GPU benchmark) two sides run the same
saved model folder with the same parameters and seeds, alternating image by image:

- **bare**: the diffusers pipeline (and refiner) loaded in this process and called in a loop,
  warm, the job's sampler (DPM++ 2M) set once: what a user with a script would get;
- **imagefleet**: a real `imagefleet serve` (SQLite in a temporary folder) and one real
  `imagefleet worker` process; each image is a txt2img job submitted over HTTP, followed on
  its event stream to the end, and its PNG downloaded: submit to PNG in hand.

It reports s/image, images/s, the overhead (imagefleet over bare, and the paired time a job
spent outside the worker's own pipeline seconds) and images per dollar at hourly prices.

`--size full` (the default when CUDA is available): the published SD 1.5 / SDXL / SDXL refiner
architectures (imagefleet/tiny_models/full_size.py), fp16 on CUDA. `--size toy` (the default
otherwise): the tiny models of imagefleet/tiny_models at an eighth of each side and a sixth of
the steps, float32 on the CPU, so the script runs here in a minute or two. Both share every
line except those sizes and dtypes.

    .venv/bin/python bench/gpu.py --size toy --images 5
    .venv/bin/python bench/gpu.py --size full --images 10 --json gpu.json   # a GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `bench.*` and `tests.harness` when run as a script

from bench.common.machine import machine_description, utc_date  # noqa: E402
from bench.overhead import _raise_on_sigterm, prepare_data_dir, stage_seconds, start_stack  # noqa: E402
from imagefleet.api_views import JobView  # noqa: E402
from imagefleet.client import ImageFleetClient  # noqa: E402
from imagefleet.protocol import JobStatus  # noqa: E402
from imagefleet.scheduling.simulator.config import default_gpus  # noqa: E402
from tests.harness.processes import run_cli, stop_all  # noqa: E402

PROMPT = "a detailed photo of a red cat"
SCHEDULER = "dpmpp_2m"
GUIDANCE = 7.0
REFINER_STRENGTH = 0.3  # the worker's RefinerPass default for refiner_steps
# The simulator's fleet prices (USD per hour), the one price table in the repository.
DEFAULT_PRICES = {gpu.name: gpu.hourly_usd for gpu in default_gpus()}


@dataclass(frozen=True)
class Case:
    name: str
    arch: str  # "sd15" or "sdxl"
    width: int
    height: int
    steps: int
    refiner_steps: int | None = None

    def toy(self) -> Case:
        """An eighth of each side (multiples of 8 kept), a sixth of the steps."""
        return Case(
            self.name,
            self.arch,
            self.width // 8,
            self.height // 8,
            max(2, self.steps // 6),
            None if self.refiner_steps is None else max(2, self.refiner_steps // 6),
        )


CASES = (
    Case("SD 1.5 512x512", "sd15", 512, 512, 30),
    Case("SD 1.5 1024x1024", "sd15", 1024, 1024, 30),
    Case("SDXL 512x512", "sdxl", 512, 512, 30),
    Case("SDXL 1024x1024", "sdxl", 1024, 1024, 30),
    Case("SDXL 1216x896 base 20 + refiner 15", "sdxl", 1216, 896, 20, 15),
)


def parse_prices(text: str) -> dict[str, float]:
    """`"RTX 4090=0.69,A100=1.64"` -> {"RTX 4090": 0.69, "A100": 1.64}."""
    prices = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, price = item.rpartition("=")
        if not name or float(price) <= 0:
            raise argparse.ArgumentTypeError(f"{item!r} is not NAME=USD_PER_HOUR")
        prices[name.strip()] = float(price)
    return prices


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    import torch

    cuda = torch.cuda.is_available()
    default_prices = ",".join(f"{name}={usd:g}" for name, usd in DEFAULT_PRICES.items())
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size",
        choices=("full", "toy"),
        default="full" if cuda else "toy",
        help="full: published architectures, fp16 (default with CUDA); toy: tiny models, "
        "small images, few steps (default without).",
    )
    parser.add_argument("--device", default="cuda" if cuda else "cpu", help="torch device.")
    parser.add_argument("--images", type=int, default=5, help="Measured images per side/case.")
    parser.add_argument("--warmup", type=int, default=1, help="Unmeasured images first.")
    parser.add_argument(
        "--cases", default="", help="Comma-separated case numbers (1-5) to run; default all."
    )
    parser.add_argument(
        "--prices",
        type=parse_prices,
        default=parse_prices(default_prices),
        help=f"GPU=USD_PER_HOUR,... for images per dollar (default: the simulator's fleet "
        f"prices, {default_prices}).",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads on a CPU, both sides (0: default)."
    )
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures here.")
    parser.add_argument("--keep", action="store_true", help="Keep the scratch folder.")
    args = parser.parse_args(argv)
    chosen = {int(n) for n in args.cases.split(",") if n.strip()}
    args.selected = [c for i, c in enumerate(CASES, 1) if not chosen or i in chosen]
    if args.size == "toy":
        args.selected = [c.toy() for c in args.selected]
    return args


# --- models --------------------------------------------------------------------------------


def needed_models(cases: list[Case]) -> list[str]:
    """The model folders the chosen cases use: "sd15", "sdxl", "refiner"."""
    names = {c.arch for c in cases} | {"refiner" for c in cases if c.refiner_steps is not None}
    return [name for name in ("sd15", "sdxl", "refiner") if name in names]


def build_models(root: Path, size: str, device: str, names: list[str]) -> dict[str, Path]:
    """The model folders (SD 1.5, SDXL base, SDXL refiner) at the chosen size."""
    import torch

    from imagefleet.demo_model import save_demo_model
    from imagefleet.tiny_models.full_size import save_full_size
    from imagefleet.tiny_models.sdxl import save_tiny_sdxl, save_tiny_sdxl_refiner

    toy = {"sd15": save_demo_model, "sdxl": save_tiny_sdxl, "refiner": save_tiny_sdxl_refiner}
    full_arch = {"sd15": "sd15", "sdxl": "sdxl", "refiner": "sdxl_refiner"}
    folders = {name: root / name for name in names}
    build_on = device if device.startswith("cuda") else "cpu"
    for name, folder in folders.items():
        if size == "toy":
            toy[name](folder)
        else:
            save_full_size(full_arch[name], folder, dtype=torch.float16, device=build_on)
    if build_on.startswith("cuda"):
        torch.cuda.empty_cache()  # the float32 weights built there are gone: free the memory
    return folders


class Bare:
    """The diffusers pipelines in this process, called as a script would call them."""

    def __init__(self, folders: dict[str, Path], device: str) -> None:
        import torch
        from diffusers.pipelines.pipeline_utils import DiffusionPipeline

        from imagefleet.worker.engines.schedulers import scheduler_spec

        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        self.device = device
        self.pipelines: dict[str, Any] = {}
        for key, folder in folders.items():
            pipeline = DiffusionPipeline.from_pretrained(str(folder), dtype=dtype)
            pipeline.scheduler = scheduler_spec(SCHEDULER).build(dict(pipeline.scheduler.config))
            pipeline.set_progress_bar_config(disable=True)
            self.pipelines[key] = pipeline.to(device)

    def run(self, case: Case, seed: int) -> float:
        """Seconds for one image: base (and refiner) call to PIL image."""
        import torch

        generator = torch.Generator(device=self.device).manual_seed(seed)
        call = {"prompt": PROMPT, "guidance_scale": GUIDANCE, "generator": generator}
        self._sync()
        started = time.perf_counter()
        base = self.pipelines[case.arch](
            **call,
            width=case.width,
            height=case.height,
            num_inference_steps=case.steps,
            output_type="pil" if case.refiner_steps is None else "latent",
        )
        if case.refiner_steps is not None:
            scheduled = max(case.refiner_steps, round(case.refiner_steps / REFINER_STRENGTH))
            self.pipelines["refiner"](
                **call, image=base.images, num_inference_steps=scheduled, strength=REFINER_STRENGTH
            )
        self._sync()
        return time.perf_counter() - started

    def _sync(self) -> None:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()


def job_params(case: Case, seed: int) -> dict[str, Any]:
    params: dict[str, Any] = {
        "prompt": PROMPT,
        "model": case.arch,
        "width": case.width,
        "height": case.height,
        "steps": case.steps,
        "guidance_scale": GUIDANCE,
        "scheduler": SCHEDULER,
        "seed": seed,
    }
    if case.refiner_steps is not None:
        params.update(refiner="refiner", refiner_steps=case.refiner_steps)
    return params


def run_job(client: ImageFleetClient, case: Case, seed: int) -> tuple[float, JobView]:
    """Client seconds from submit to the PNG downloaded (the event stream, no polling)."""
    started = time.perf_counter()
    job = client.submit_txt2img(job_params(case, seed))
    job = client.wait_streaming(job.id, timeout=3600)
    if job.status is not JobStatus.succeeded:
        raise RuntimeError(f"job {job.id} ended {job.status.value}: {job.error}")
    client.download(job.id, 0)
    return time.perf_counter() - started, job


# --- figures -------------------------------------------------------------------------------


@dataclass
class CaseFigures:
    case: Case
    bare: list[float] = field(default_factory=list)
    stack: list[float] = field(default_factory=list)
    worker_pipeline: list[float] = field(default_factory=list)  # inference + decode, per job
    stages: dict[str, list[float]] = field(default_factory=dict)  # the API's job timings

    def summary(self, prices: dict[str, float]) -> dict[str, Any]:
        bare, stack = statistics.fmean(self.bare), statistics.fmean(self.stack)
        outside = [s - p for s, p in zip(self.stack, self.worker_pipeline, strict=True)]
        return {
            "case": asdict(self.case),
            "bare_s_per_image": bare,
            "imagefleet_s_per_image": stack,
            "bare_images_per_s": 1 / bare,
            "imagefleet_images_per_s": 1 / stack,
            "overhead_pct": (stack / bare - 1) * 100,
            "outside_pipeline_s_median": statistics.median(outside),
            # Where the time outside goes: the orchestrator's own stages of each job (queue:
            # submit to claim; "in no stage": claim to model lookup and upload to completion),
            # and what the client waited beyond the orchestrator's total (events, download).
            "stage_s_median": {k: statistics.median(v) for k, v in self.stages.items()},
            "client_beyond_orchestrator_s_median": statistics.median(
                c - o for c, o in zip(self.stack, self.stages["orchestrator total"], strict=True)
            ),
            "imagefleet_images_per_usd": {n: 3600 / stack / usd for n, usd in prices.items()},
            "bare_images_per_usd": {n: 3600 / bare / usd for n, usd in prices.items()},
            "samples": {"bare": self.bare, "imagefleet": self.stack},
        }


def print_report(summaries: list[dict[str, Any]], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bench/gpu.py --size {args.size} on {args.device}")
    for column in ("case", "size, steps", "bare s/img", "fleet s/img", "fleet img/s"):
        table.add_column(column, justify="left" if column == "case" else "right")
    table.add_column("overhead", justify="right")
    table.add_column("outside call", justify="right")
    for name in args.prices:
        table.add_column(f"img/$ {name}", justify="right")
    for s in summaries:
        case = s["case"]
        steps = f"{case['steps']}" + (f"+{case['refiner_steps']}" if case["refiner_steps"] else "")
        table.add_row(
            case["name"],
            f"{case['width']}x{case['height']}, {steps}",
            f"{s['bare_s_per_image']:.3f}",
            f"{s['imagefleet_s_per_image']:.3f}",
            f"{s['imagefleet_images_per_s']:.2f}",
            f"{s['overhead_pct']:+.1f}%",
            f"{s['outside_pipeline_s_median'] * 1e3:.0f} ms",
            *(f"{s['imagefleet_images_per_usd'][n]:,.0f}" for n in args.prices),
        )
    console = Console(width=200)
    console.print(table)
    console.print(
        "img/$: imagefleet's measured images/s held for an hour at each listed hourly price "
        "(the rate is this machine's; on other hardware only the price column changes)."
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    cpu = args.device == "cpu"
    if cpu and args.threads:
        import torch

        torch.set_num_threads(args.threads)
    scratch = Path(tempfile.mkdtemp(prefix="imagefleet-bench-gpu-"))
    data_dir = scratch / "data"
    succeeded = False
    try:
        print(f"building {args.size} models under {scratch} ...", flush=True)
        names = needed_models(args.selected)
        folders = build_models(scratch / "models", args.size, args.device, names)
        client_key, worker_key = prepare_data_dir(data_dir)  # creates the database
        for name, folder in folders.items():
            run_cli("models", "add", name, str(folder), "--data-dir", str(data_dir))
        bare = Bare(folders, args.device)
        fleet = start_stack(data_dir, scratch, worker_key, args.threads if cpu else 0)
        figures = [CaseFigures(case) for case in args.selected]
        with ImageFleetClient(fleet.url, client_key) as client:
            for fig in figures:
                for index in range(args.warmup + args.images):
                    seed = 1000 + index
                    bare_s = bare.run(fig.case, seed)
                    stack_s, job = run_job(client, fig.case, seed)
                    if index < args.warmup:
                        continue
                    t = job.timings
                    fig.bare.append(bare_s)
                    fig.stack.append(stack_s)
                    fig.worker_pipeline.append(
                        (t.inference_seconds or 0.0) + (t.decode_seconds or 0.0)
                    )
                    for stage, seconds in stage_seconds(job).items():
                        fig.stages.setdefault(stage, []).append(seconds)
                print(f"{fig.case.name}: bare {statistics.fmean(fig.bare):.3f}s, "
                      f"imagefleet {statistics.fmean(fig.stack):.3f}s", flush=True)  # fmt: skip
        summaries = [fig.summary(args.prices) for fig in figures]
        print_report(summaries, args)
        meta = {"date": utc_date(), "machine": machine_description(), "load": os.getloadavg()}
        print(f"{meta['date']}; {meta['machine']}; load average {meta['load']}")
        if args.json:
            body = {"args": {k: v for k, v in vars(args).items() if k != "selected"}, **meta}
            args.json.write_text(json.dumps({**body, "cases": summaries}, default=str, indent=1))
        succeeded = True
        return 0
    finally:
        stop_all(10.0)
        if succeeded and not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            print(f"logs kept in {scratch}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
