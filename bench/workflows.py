"""Graph engine overhead: ComfyUI's default workflow run by the comfy handler versus the same
txt2img as a built-in job, on the same model, size, steps, sampler and seed.

Both go through their real worker handlers in this process (no HTTP): the built-in job through
`Txt2ImgHandler` on `DiffusersEngine` (one diffusers pipeline call), the graph through
`ComfyHandler` (the model manager's prepared pipeline, the graph executor and its own
denoising loop). Models are resident for both before timing starts (warm-up runs). Runs
alternate between the two so a loaded machine's drift hits both alike; the figure is the
ratio of medians, measured in the same run.

    .venv/bin/python bench/workflows.py --size 256 --steps 20 --runs 7
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `tests.*` when run as a script

from imagefleet.demo_model import save_demo_model  # noqa: E402
from imagefleet.hashing import path_sha256  # noqa: E402
from imagefleet.worker.engines.diffusers_engine import DiffusersEngine  # noqa: E402
from imagefleet.worker.handlers.base import JobContext  # noqa: E402
from imagefleet.worker.handlers.comfy import ComfyHandler  # noqa: E402
from imagefleet.worker.handlers.txt2img import Txt2ImgHandler  # noqa: E402
from imagefleet.worker.model_cache import ModelCache  # noqa: E402
from imagefleet.worker_protocol import Assignment, ModelRef  # noqa: E402
from tests.comfy_graphs import txt2img  # noqa: E402

PROMPT = "a photo of the cat"


def assignment(kind: str, params: dict[str, Any], model: ModelRef) -> Assignment:
    return Assignment(
        job_id="bench",
        attempt_id="bench",
        fencing_token=1,
        lease_seconds=60,
        lease_expires_at=datetime.now(UTC),
        kind=kind,
        params=params,
        models=[model],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(1)  # tiny models gain nothing from threads on a shared machine
    root = Path(tempfile.mkdtemp(prefix="imagefleet-bench-workflows-"))
    folder = save_demo_model(root / "demo")
    sha, size = path_sha256(folder)
    model = ModelRef(
        name="demo", version=1, kind="checkpoint", source=str(folder), sha256=sha, size_bytes=size
    )
    engine = DiffusersEngine()
    cache = ModelCache(root / "cache")
    builtin, graph_handler = Txt2ImgHandler(), ComfyHandler()
    builtin_params = {
        "prompt": PROMPT,
        "negative_prompt": "",
        "model": "demo",
        "width": args.size,
        "height": args.size,
        "steps": args.steps,
        "guidance_scale": 7.0,
        "seed": 42,
        "scheduler": "euler",
    }
    graph = txt2img("demo", steps=args.steps, size=args.size, sampler="euler")
    graph["3"]["inputs"]["cfg"] = 7.0
    jobs = [
        ("built-in txt2img", builtin, assignment("txt2img", builtin_params, model)),
        ("comfy graph", graph_handler, assignment("comfy", {"graph": graph}, model)),
    ]
    seconds: dict[str, list[float]] = {name: [] for name, _, _ in jobs}
    for run in range(args.runs + 1):
        for name, handler, job in jobs:
            ctx = JobContext(
                assignment=job,
                engine=engine,
                cache=cache,
                fetch=lambda url: b"",
                on_step=lambda done, total: None,
                should_stop=lambda: False,
            )
            started = time.perf_counter()
            handler.run(ctx)
            if run:  # run 0 loads the models
                seconds[name].append(time.perf_counter() - started)
    base = statistics.median(seconds["built-in txt2img"])
    print(f"{args.size}x{args.size}, {args.steps} steps, euler, cfg 7, {args.runs} runs each")
    print(f"{'path':<18} {'median s':>9} {'ratio':>7}")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"{name:<18} {median:>9.3f} {median / base:>7.3f}")


if __name__ == "__main__":
    main()
