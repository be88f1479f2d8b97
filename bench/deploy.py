"""Deployments: time from `imagefleet deploy` to the first run's result on a warm fleet, and
warm runs of the deployment, against the same work as a built-in txt2img job in the same run.

A real orchestrator over HTTP and one real worker (DiffusersEngine, CPU) in this process, the
tiny demo model registered and made resident by a warm-up txt2img job. The deployment is a
Python pipeline whose setup loads the demo model with diffusers (from the path the worker
verified) and whose run makes one image at the same size, steps, sampler and seed as the
built-in job. "deploy -> first result" runs the CLI's deploy (pack, upload, validate), then a
run, until its output can be downloaded: it includes the package fetch, the subprocess start
(importing torch and diffusers) and setup's model load. Warm runs reuse the process.

    .venv/bin/python bench/deploy.py --size 64 --steps 4 --runs 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `tests.*` when run as a script

from typer.testing import CliRunner  # noqa: E402

from imagefleet.api_views import JobView  # noqa: E402
from imagefleet.cli import app as cli  # noqa: E402
from imagefleet.client import ImageFleetClient  # noqa: E402
from imagefleet.config import Settings  # noqa: E402
from imagefleet.demo_model import save_demo_model  # noqa: E402
from imagefleet.deployments.client import Deployments  # noqa: E402
from imagefleet.models.registry import Registration, register  # noqa: E402
from imagefleet.orchestrator.app import create_app  # noqa: E402
from imagefleet.protocol import JobStatus  # noqa: E402
from imagefleet.store.database import Database  # noqa: E402
from imagefleet.store.keys import create_key  # noqa: E402
from imagefleet.worker.engines.diffusers_engine import DiffusersEngine  # noqa: E402
from imagefleet.worker.handlers.workflow import HANDLER  # noqa: E402
from imagefleet.worker.loop import Worker, WorkerConfig  # noqa: E402
from tests.harness.servers import serving  # noqa: E402

PROMPT = "a photo of the cat"
PIPELINE = """
import os

import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

torch.set_num_threads(1)
PIPE = {}


def setup(models):
    path = models["checkpoint"]["path"]
    pipe = StableDiffusionPipeline.from_pretrained(path, safety_checker=None)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    PIPE["pipe"] = pipe


def run(inputs, context):
    generator = torch.Generator("cpu").manual_seed(context.seed)
    image = PIPE["pipe"](
        inputs["prompt"],
        negative_prompt="",
        width=inputs["size"],
        height=inputs["size"],
        num_inference_steps=inputs["steps"],
        guidance_scale=7.0,
        generator=generator,
    ).images[0]
    image.save(os.path.join(context.output_dir, "0.png"))
    return ["0.png"]
"""
MANIFEST = """type = "python"
models = { checkpoint = "demo" }

[input_schema]
type = "object"
required = ["prompt", "size", "steps"]
properties.prompt = { type = "string" }
properties.size = { type = "integer" }
properties.steps = { type = "integer" }
"""


def wait(client: ImageFleetClient, job: JobView) -> float:
    done = client.wait(job.id, timeout=600)
    if done.status is not JobStatus.succeeded:
        raise SystemExit(f"job {job.id} {done.status.value}: {done.error}")
    client.download(job.id, 0)
    return time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    # A warm fleet: the worker keeps a spare process with torch and diffusers imported.
    os.environ["IMAGEFLEET_WORKER_DEPLOY_PREWARM_AT_START"] = "1"
    root = Path(tempfile.mkdtemp(prefix="imagefleet-bench-deploy-"))
    settings = Settings(data_dir=root / "data", database_url=f"sqlite:///{root / 'bench.db'}")
    db = Database(settings.database_url)
    db.upgrade()
    register(db, Registration("demo", str(save_demo_model(root / "demo"))))
    with db.write() as conn:
        _, token = create_key(conn, name="bench", scope="deploy", tier="free", now=time.time())
        _, worker_token = create_key(conn, name="w", scope="worker", tier="free", now=time.time())
    package = root / "pkg"
    package.mkdir()
    (package / "imagefleet.toml").write_text(MANIFEST)
    (package / "pipeline.py").write_text(PIPELINE)
    params = {
        "prompt": PROMPT,
        "model": "demo",
        "width": args.size,
        "height": args.size,
        "steps": args.steps,
        "guidance_scale": 7.0,
        "seed": 42,
        "scheduler": "euler",
    }
    inputs = {"prompt": PROMPT, "size": args.size, "steps": args.steps}
    with serving(create_app(settings, run_duties=False)) as url:
        config = WorkerConfig(url, worker_token, root / "cache", claim_wait_seconds=1.0)
        worker = Worker(config, DiffusersEngine("cpu"))
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        client = ImageFleetClient(url, token)
        api = Deployments(client)
        try:
            wait(client, client.submit("txt2img", params))  # warm: the model is resident
            builtin = []
            for _ in range(args.runs):
                started = time.perf_counter()
                builtin.append(wait(client, client.submit("txt2img", params)) - started)
            while not HANDLER.spare_ready():  # a warm fleet: its spare process is ready
                time.sleep(0.5)
            deploy_started = time.perf_counter()
            result = CliRunner().invoke(
                cli, ["deploy", str(package), "--name", "bench", "--url", url, "--key", token]
            )
            if result.exit_code:
                raise SystemExit(result.output)
            deploy_seconds = time.perf_counter() - deploy_started
            first = wait(client, api.run("bench", inputs, seed=42)) - deploy_started
            warm = []
            for _ in range(args.runs):
                started = time.perf_counter()
                warm.append(wait(client, api.run("bench", inputs, seed=42)) - started)
        finally:
            worker.request_stop()
            thread.join(timeout=60)
            HANDLER.close()
            client.close()
    load = os.getloadavg()[0]
    print(f"{args.size}x{args.size}, {args.steps} steps, euler, {args.runs} runs; load {load:.1f}")
    rows = [
        ("`imagefleet deploy` alone (pack, upload, checks) (s)", deploy_seconds),
        ("built-in txt2img, warm (median s)", statistics.median(builtin)),
        ("deployment, deploy -> first result (s)", first),
        ("deployment, warm run (median s)", statistics.median(warm)),
    ]
    for name, value in rows:
        print(f"{name:<54} {value:>8.2f}")


if __name__ == "__main__":
    main()
