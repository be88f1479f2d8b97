"""train_lora through the fleet, in process: a real orchestrator app over HTTP and two real
workers with the diffusers engine. The first worker is told to stop right after its step-2
checkpoint (as SIGTERM on a spot node would), checkpoints the step it reached and hands the
job back; the second resumes from that checkpoint, finishes, and the LoRA is registered and
generates in a txt2img job at once. The result equals an uninterrupted run of the same job."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load

from imagefleet.client import ImageFleetClient
from imagefleet.config import Settings
from imagefleet.kinds.train_lora import TrainLoraParams
from imagefleet.models.registry import Registration, register
from imagefleet.orchestrator.app import create_app
from imagefleet.protocol import AttemptOutcome, JobStatus, ModelKind
from imagefleet.store.database import Database
from imagefleet.store.keys import create_key
from imagefleet.training.dataset import load_zip_dataset
from imagefleet.training_protocol import CheckpointReceipt
from imagefleet.worker.handlers.train_lora import training_params
from imagefleet.worker.loop import Worker, WorkerConfig
from imagefleet.worker.orchestrator_client import OrchestratorClient
from imagefleet.worker.training.engine import LoraTrainer
from tests.harness.servers import serving
from tests.training_jobs import dataset_zip, train_params

pytestmark = [pytest.mark.usefixtures("one_cpu_thread"), pytest.mark.timeout(300)]
STOP_AFTER_CHECKPOINT = 2


class StopsAfterCheckpoint(OrchestratorClient):
    """The worker's real client; after checkpoint `step` is recorded it asks its worker to
    stop, as a SIGTERM would: the job is handed back at the next step boundary."""

    def __init__(self, worker: Worker, step: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.worker = worker
        self.step = step

    def upload_checkpoint(self, attempt_id: str, step: int, data: bytes) -> CheckpointReceipt:
        receipt = super().upload_checkpoint(attempt_id, step, data)
        if step == self.step:
            self.worker.request_stop()
        return receipt


@pytest.fixture
def fleet(tmp_path: Path, demo_dir: Path) -> Iterator[tuple[str, str, str]]:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'fleet.db'}",
        lease_seconds=30,
        retry_backoff_seconds=0,
        gpu_prices={"cpu": 0.02},
    )
    db = Database(settings.database_url)
    db.upgrade()
    register(db, Registration("demo", str(demo_dir)))
    with db.write() as conn:
        _, client_token = create_key(conn, name="c", scope="client", tier="free", now=1.0)
        _, worker_token = create_key(conn, name="w", scope="worker", tier="free", now=1.0)
    with serving(create_app(settings, run_duties=False)) as url:
        yield url, client_token, worker_token
    db.dispose()


def worker(url: str, token: str, tmp_path: Path, node: str) -> Worker:
    config = WorkerConfig(
        orchestrator_url=url,
        key=token,
        cache_dir=tmp_path / f"cache-{node}",
        node_id=node,
        worker_id=f"worker-{node}",
        device="cpu",
        claim_wait_seconds=2.0,
    )
    return Worker(config)


def run(target: Worker, jobs: int) -> threading.Thread:
    thread = threading.Thread(target=target.run, kwargs={"max_jobs": jobs}, daemon=True)
    thread.start()
    return thread


def test_a_handed_back_training_job_resumes_elsewhere_to_the_same_lora_usable_at_once(
    fleet: tuple[str, str, str], tmp_path: Path, demo_dir: Path
) -> None:
    url, client_token, worker_token = fleet
    client = ImageFleetClient(url, client_token)
    data = dataset_zip()
    dataset = client.upload_input(data, "application/zip")
    assert (dataset.images, dataset.uncaptioned) == (3, 0)
    params = train_params(dataset=dataset.id, steps=6, checkpoint_every=2, keep_last=2)
    job = client.submit("train_lora", params)

    first = worker(url, worker_token, tmp_path, "a")
    first.client = StopsAfterCheckpoint(first, STOP_AFTER_CHECKPOINT, url, worker_token)
    run(first, jobs=1).join(timeout=240)
    handed_back = client.attempts(job.id)
    assert [a.outcome for a in handed_back] == [AttemptOutcome.handed_back]

    second = worker(url, worker_token, tmp_path, "b")
    second_thread = run(second, jobs=2)
    done = client.wait(job.id, timeout=240)
    assert done.status is JobStatus.succeeded, done.error
    view = client.training(job.id)
    resumed = view.attempts[1].resumed_from_step
    assert resumed is not None and resumed >= STOP_AFTER_CHECKPOINT
    assert view.interruptions_survived == 1 and view.steps_lost == 0
    assert view.checkpoints == [] and view.cost is not None
    assert view.model is not None and view.model.kind is ModelKind.lora
    assert view.model.trigger_words == ["a photo of sks cat"]

    trained = load(client.download(job.id, 0))
    reference = LoraTrainer(
        demo_dir,
        training_params(TrainLoraParams.model_validate(done.params)),
        load_zip_dataset(data, instance_prompt=params["instance_prompt"]),
        base_model_sha256=done.models[0].sha256,
        work_dir=tmp_path / "reference",
        device="cpu",
    ).train()
    expected = load(reference.lora_path.read_bytes())
    assert trained.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(trained[name], tensor, rtol=1e-5, atol=1e-7)

    # Usable at once: a txt2img job with it runs on the fleet, and the file changes the image
    # the base pipeline makes.
    prompt = {"prompt": "a photo of sks cat", "model": "demo", "width": 64, "height": 64}
    image = client.submit("txt2img", {**prompt, "steps": 2, "loras": [{"name": "sks-cat"}]})
    assert [(m.role.value, m.name) for m in image.models] == [
        ("checkpoint", "demo"),
        ("lora", "sks-cat"),
    ]
    generated = client.wait(image.id, timeout=240)
    assert generated.status is JobStatus.succeeded, generated.error
    second_thread.join(timeout=60)
    lora_file = tmp_path / "sks-cat.safetensors"
    lora_file.write_bytes(client.download(job.id, 0))
    assert not torch.equal(generate(demo_dir, None), generate(demo_dir, lora_file))


def generate(demo_dir: Path, lora: Path | None) -> torch.Tensor:
    from diffusers import StableDiffusionPipeline

    pipeline = StableDiffusionPipeline.from_pretrained(demo_dir, safety_checker=None)
    if lora is not None:
        pipeline.load_lora_weights(str(lora))
    out = pipeline(
        "a photo of sks cat",
        num_inference_steps=2,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    )
    return out.images[0]
