"""train_lora on the worker: fetch the base model and dataset, resume from the newest
checkpoint that reads back, train with the phase-1 engine (worker/training/engine.py), report
loss in heartbeats and every checkpoint through the `checkpoint` transition (the archive put
straight into an S3-compatible bucket through a presigned URL, else through the API), and return the
LoRA file, which the orchestrator registers as a model when the attempt completes.

How the engine's outcomes map onto the protocol:
- `TrainingStopped` (the job was cancelled, the lease lost, or the worker is shutting down,
  having checkpointed the current step) -> `GenerationCancelled`: the loop hands the job back;
- `TrainingFailed` (NaN loss, unsupported base model...) and `DatasetError` -> a final failure
  with the reason (`InvalidJobInput`), never retried elsewhere;
- checkpoints that do not read back (corrupt, of another run, unreachable) are passed over,
  newest first, and reported with `resume`, so the attempt history says why.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagefleet.checkpoint_protocol import StoredCheckpoint
from imagefleet.kinds.train_lora import LORA_MEDIA_TYPE, TrainLoraParams, instance_input_name
from imagefleet.protocol import ModelRole
from imagefleet.training.dataset import (
    DatasetManifest,
    load_instance_images,
    load_zip_dataset,
)
from imagefleet.training.dataset_archive import DatasetError
from imagefleet.training.params import LoraTrainingParams
from imagefleet.training_protocol import ResumeReport, SkippedCheckpoint
from imagefleet.worker.handlers.base import InvalidJobInput, JobContext, OutputFile
from imagefleet.worker.handlers.generation import parsed_params

if TYPE_CHECKING:
    from imagefleet.worker.training.checkpoint import CheckpointRef, ResumePoint, RunIdentity
    from imagefleet.worker.training.tracking import Tracker
    from imagefleet.worker.training.types import StepProgress, StopReason

log = logging.getLogger("imagefleet.worker.train_lora")
# Experiment tracking (worker/training/tracking.py): "jsonl:PATH" or "mlflow:TRACKING_URI".
TRACKING_ENV = "IMAGEFLEET_TRAINING_TRACKING"
CHECKPOINT_MEDIA_TYPE = "application/zip"


def training_params(params: TrainLoraParams) -> LoraTrainingParams:
    """The hyperparameters alone: what identifies the run (input ids do not; the dataset's
    sha256 does)."""
    fields = set(LoraTrainingParams.model_fields)
    return LoraTrainingParams.model_validate(params.model_dump(include=fields))


def load_dataset(ctx: JobContext, params: TrainLoraParams) -> DatasetManifest:
    try:
        if params.dataset is not None:
            return load_zip_dataset(
                ctx.input_bytes("dataset"), instance_prompt=params.instance_prompt
            )
        images = [
            (f"{index:04d}-{input_id}.img", ctx.input_bytes(instance_input_name(index)))
            for index, input_id in enumerate(params.instance_images)
        ]
        return load_instance_images(images, params.instance_prompt or "")
    except DatasetError as exc:
        problems = "; ".join(exc.problems[:20])
        raise InvalidJobInput(f"{exc}{': ' + problems if problems else ''}") from exc


def find_resume_point(
    ctx: JobContext, root: Path, identity: RunIdentity
) -> tuple[ResumePoint, list[SkippedCheckpoint]]:
    """Downloads the job's checkpoints and picks the newest that reads back; returns it with
    each one passed over and why (unreachable, altered, corrupt, or of another run)."""
    from imagefleet.worker.training.archive import unpack_checkpoint
    from imagefleet.worker.training.checkpoint import (
        CheckpointError,
        CheckpointRef,
        load_newest_valid,
    )

    refs: list[CheckpointRef] = []
    ids: dict[Path, int] = {}
    skipped: list[SkippedCheckpoint] = []
    root.mkdir(parents=True, exist_ok=True)
    for index, offered in enumerate(ctx.assignment.checkpoints):
        archive = root / f"{index}.zip"
        try:
            with ctx.stage("download"):
                data = ctx.fetch(offered.url)
            if hashlib.sha256(data).hexdigest() != offered.sha256:
                raise ValueError("the file does not match its recorded sha256")
            archive.write_bytes(data)
            folder = unpack_checkpoint(archive, root / str(index))
        except CheckpointError as exc:
            skipped.append(
                SkippedCheckpoint(checkpoint_id=offered.checkpoint_id, reason=exc.reason)
            )
            continue
        except Exception as exc:  # unreachable or altered in storage: as good as corrupt
            reason = f"could not be fetched intact: {exc}"[:2000]
            skipped.append(SkippedCheckpoint(checkpoint_id=offered.checkpoint_id, reason=reason))
            continue
        ids[folder] = offered.checkpoint_id
        refs.append(CheckpointRef(offered.step, folder))
    point = load_newest_valid(refs, identity)
    skipped += [
        SkippedCheckpoint(checkpoint_id=ids[s.path], reason=s.reason[:2000]) for s in point.skipped
    ]
    return point, skipped


def start_tracking(ctx: JobContext, params: TrainLoraParams, start_step: int) -> Tracker | None:
    """The attempt's tracked run when the worker's environment names a tracker
    (IMAGEFLEET_TRAINING_TRACKING), else None. A run per attempt, named job/attempt and tagged
    with both and the step it resumed at; a bad setting is logged, never a failed job."""
    from imagefleet.worker.training.tracking import make_tracker, parse_tracking

    spec = os.environ.get(TRACKING_ENV, "").strip()
    if not spec:
        return None
    try:
        tracker = make_tracker(parse_tracking(spec))
    except ValueError as exc:
        log.warning("%s is ignored: %s", TRACKING_ENV, exc)
        return None
    assignment = ctx.assignment
    tags = {
        "job_id": assignment.job_id,
        "attempt_id": assignment.attempt_id,
        "resumed_from_step": str(start_step),
    }
    hyperparameters = training_params(params).model_dump(mode="json")
    tracker.start(f"{assignment.job_id}/{assignment.attempt_id}", hyperparameters, tags)
    return tracker


class TrainLoraHandler:
    kind = "train_lora"

    def supports(self, engine: Any) -> bool:
        """Any worker with torch and peft (the `worker` extra) trains; the engine is unused."""
        return all(importlib.util.find_spec(name) is not None for name in ("torch", "peft"))

    def run(self, ctx: JobContext) -> list[OutputFile]:
        from imagefleet.worker.engines.base import GenerationCancelled
        from imagefleet.worker.training.engine import LoraTrainer
        from imagefleet.worker.training.types import TrainingFailed, TrainingStopped

        params: TrainLoraParams = parsed_params(ctx)
        base = next((m for m in ctx.assignment.models if m.role is ModelRole.checkpoint), None)
        if base is None:
            raise InvalidJobInput("the job names no base model")
        dataset = load_dataset(ctx, params)
        path, config = ctx.model_files(base)
        work = Path(tempfile.mkdtemp(prefix=f"imagefleet-train-{ctx.assignment.job_id}-"))
        tracker: Tracker | None = None
        device = getattr(ctx.engine, "device", None)
        try:
            trainer = LoraTrainer(
                path,
                training_params(params),
                dataset,
                base_model_sha256=base.sha256,
                work_dir=work,
                config_dir=config,
                device=str(device) if device is not None else None,
            )
            resume, skipped = find_resume_point(ctx, work / "resume", trainer.identity)
            self._report_resume(ctx, resume, skipped)
            tracker = start_tracking(ctx, params, resume.state.step if resume.state else 0)
            with ctx.stage("inference"):
                result = trainer.train(
                    resume=resume.state,
                    on_progress=self._progress_reporter(ctx, tracker),
                    should_stop=lambda: self._stop_reason(ctx),
                    on_checkpoint=lambda step, folder: self._checkpoint(ctx, step, folder),
                )
            for notice in result.notices:
                log.info("attempt %s: %s", ctx.assignment.attempt_id, notice)
            if tracker is not None:
                tracker.finish("succeeded")
            return [OutputFile(result.lora_path.read_bytes(), content_type=LORA_MEDIA_TYPE)]
        except TrainingStopped as exc:
            if tracker is not None:
                tracker.finish("stopped")
            raise GenerationCancelled(str(exc)) from exc
        except TrainingFailed as exc:
            if tracker is not None:
                tracker.finish("failed")
            raise InvalidJobInput(str(exc)) from exc
        finally:
            shutil.rmtree(work, ignore_errors=True)

    @staticmethod
    def _report_resume(
        ctx: JobContext, point: ResumePoint, skipped: list[SkippedCheckpoint]
    ) -> None:
        step = point.state.step if point.state is not None else 0
        if ctx.client is not None:
            report = ResumeReport(resumed_from_step=step, skipped=skipped)
            ctx.client.report_resume(ctx.assignment.attempt_id, report)
            log.info(
                "attempt %s: resuming at step %d (%d checkpoints passed over)",
                ctx.assignment.attempt_id,
                step,
                len(skipped),
            )

    def _progress_reporter(
        self, ctx: JobContext, tracker: Tracker | None
    ) -> Callable[[StepProgress], None]:
        from imagefleet.worker.training.tracking import tracked

        def report(progress: StepProgress) -> None:
            self._progress(ctx, progress)

        return report if tracker is None else tracked(tracker, report)

    @staticmethod
    def _progress(ctx: JobContext, progress: StepProgress) -> None:
        if ctx.heartbeat is not None:
            ctx.heartbeat.progress(
                progress.step, progress.total_steps, progress.loss, progress.learning_rate
            )
        else:
            ctx.on_step(progress.step, progress.total_steps)

    @staticmethod
    def _stop_reason(ctx: JobContext) -> StopReason | None:
        from imagefleet.worker.training.types import StopReason

        if not ctx.should_stop():
            return None
        if ctx.heartbeat is not None and ctx.heartbeat.cancelled:
            return StopReason.cancel
        return StopReason.hand_back

    @staticmethod
    def _checkpoint(ctx: JobContext, step: int, folder: Path) -> None:
        """Runs on the engine's uploader thread: pack, upload, record (the transition)."""
        from imagefleet.worker.training.archive import pack_checkpoint

        if ctx.client is None:
            raise RuntimeError("this worker has no orchestrator client to report checkpoints")
        archive = pack_checkpoint(folder, folder.with_name(folder.name + ".zip"))
        attempt = ctx.assignment.attempt_id
        try:
            data = archive.read_bytes()
            # S3-compatible store: straight into the bucket, then reported (checkpoint_direct.py).
            target = ctx.client.checkpoint_target(attempt, step)
            if target.url is None:
                ctx.client.upload_checkpoint(attempt, step, data)
                return
            ctx.client.put_direct(target.url, data, CHECKPOINT_MEDIA_TYPE)
            stored = StoredCheckpoint(size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
            ctx.client.report_stored_checkpoint(attempt, step, stored)
        finally:
            archive.unlink(missing_ok=True)


HANDLER = TrainLoraHandler()
