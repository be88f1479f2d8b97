"""Turns store rows into wire models (the only place that knows both)."""

from __future__ import annotations

from collections.abc import Callable

from imagefleet.orchestrator.transitions import to_datetime
from imagefleet.protocol import (
    AttemptView,
    JobError,
    JobView,
    OutputView,
    Progress,
    Timings,
    Txt2ImgParams,
)
from imagefleet.store.artifacts import ArtifactRow
from imagefleet.store.attempts import AttemptRow
from imagefleet.store.jobs import JobRow

OutputUrl = Callable[[ArtifactRow], str]


def attempt_view(row: AttemptRow) -> AttemptView:
    error = (
        JobError(code=row.error_code, message=row.error_message or "") if row.error_code else None
    )
    return AttemptView(
        number=row.seq,
        worker_id=row.worker_id,
        node_id=row.node_id,
        started_at=to_datetime(row.started_at),
        ended_at=to_datetime(row.ended_at) if row.ended_at else None,
        outcome=row.outcome,
        error=error,
    )


def job_view(row: JobRow, outputs: list[ArtifactRow], output_url: OutputUrl) -> JobView:
    total = row.progress_total
    fraction = (
        1.0 if row.status.value == "succeeded" else (row.progress_step / total if total else 0.0)
    )
    stage = row.stage_timings
    error = last_error = None
    if row.error_code:
        reported = JobError(code=row.error_code, message=row.error_message or "")
        if row.status.is_final:
            error = reported
        else:
            last_error = reported
    return JobView(
        id=row.id,
        kind="txt2img",
        status=row.status,
        tier=row.tier,
        params=Txt2ImgParams(**row.params),
        progress=Progress(fraction=min(1.0, fraction), step=row.progress_step, total_steps=total),
        timings=Timings(
            queued_at=to_datetime(row.created_at),
            started_at=to_datetime(row.started_at) if row.started_at else None,
            finished_at=to_datetime(row.finished_at) if row.finished_at else None,
            queue_seconds=(row.started_at - row.created_at) if row.started_at else None,
            model_load_seconds=stage.get("model_load_seconds"),
            inference_seconds=stage.get("inference_seconds"),
            upload_seconds=stage.get("upload_seconds"),
            total_seconds=(row.finished_at - row.created_at) if row.finished_at else None,
        ),
        outputs=[
            OutputView(
                index=a.idx,
                url=output_url(a),
                content_type=a.content_type,
                size_bytes=a.size_bytes,
                width=a.width or 0,
                height=a.height or 0,
                seed=a.seed or 0,
            )
            for a in outputs
        ],
        error=error,
        last_error=last_error,
        attempts=row.attempts,
    )
