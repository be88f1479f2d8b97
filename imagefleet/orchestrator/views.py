"""Turns store rows into wire models (the only place that knows both)."""

from __future__ import annotations

from collections.abc import Callable

from imagefleet.api_views import (
    AttemptView,
    InputView,
    JobError,
    JobModelView,
    JobView,
    ModelView,
    NodeEventView,
    NodeView,
    OutputView,
    Progress,
    QueueView,
    Timings,
)
from imagefleet.orchestrator.transitions import to_datetime
from imagefleet.protocol import JobStatus
from imagefleet.store.artifacts import ArtifactRow
from imagefleet.store.attempts import AttemptRow
from imagefleet.store.inputs import InputRow
from imagefleet.store.job_models import JobModel
from imagefleet.store.jobs import JobRow
from imagefleet.store.models import Model
from imagefleet.store.nodes import NodeEvent, NodeRow

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


def model_view(model: Model) -> ModelView:
    return ModelView(
        name=model.name,
        version=model.version,
        kind=model.kind,
        base=model.base,
        format=model.format,
        sha256=model.sha256,
        size_bytes=model.size_bytes,
        trigger_words=list(model.trigger_words),
    )


def input_view(row: InputRow) -> InputView:
    return InputView(
        id=row.id,
        content_type=row.content_type,
        size_bytes=row.size_bytes,
        sha256=row.sha256,
        width=row.width,
        height=row.height,
        images=row.images,
        uncaptioned=row.uncaptioned,
    )


def job_view(
    row: JobRow,
    outputs: list[ArtifactRow],
    output_url: OutputUrl,
    combo: list[JobModel],
    queue: QueueView | None = None,
) -> JobView:
    total = row.progress_total
    fraction = (
        1.0 if row.status is JobStatus.succeeded else (row.progress_step / total if total else 0.0)
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
        kind=row.kind,
        status=row.status,
        tier=row.tier,
        params=row.params,
        models=[
            JobModelView(
                role=item.role,
                name=item.model.name,
                version=item.model.version,
                sha256=item.model.sha256,
                weight=item.weight,
            )
            for item in combo
        ],
        combo_key=row.combo_key,
        progress=Progress(fraction=min(1.0, fraction), step=row.progress_step, total_steps=total),
        timings=Timings(
            queued_at=to_datetime(row.created_at),
            started_at=to_datetime(row.started_at) if row.started_at else None,
            finished_at=to_datetime(row.finished_at) if row.finished_at else None,
            queue_seconds=(row.started_at - row.created_at) if row.started_at else None,
            download_seconds=stage.get("download_seconds"),
            model_load_seconds=stage.get("model_load_seconds"),
            adapter_seconds=stage.get("adapter_seconds"),
            inference_seconds=stage.get("inference_seconds"),
            decode_seconds=stage.get("decode_seconds"),
            upload_seconds=stage.get("upload_seconds"),
            total_seconds=(row.finished_at - row.created_at) if row.finished_at else None,
        ),
        outputs=[
            OutputView(
                index=a.idx,
                url=output_url(a),
                content_type=a.content_type,
                size_bytes=a.size_bytes,
                width=a.width,
                height=a.height,
                seed=a.seed,
            )
            for a in outputs
        ],
        error=error,
        last_error=last_error,
        attempts=row.attempts,
        placement=row.placement,
        queue=queue,
        warning=row.warning if row.status is JobStatus.queued else None,
    )


def node_view(node: NodeRow) -> NodeView:
    return NodeView(
        id=node.id,
        status="quarantined" if node.quarantined_at else "active",
        reason=node.reason,
        quarantined_at=to_datetime(node.quarantined_at) if node.quarantined_at else None,
        recent_failures=node.recent_failures,
        last_seen_at=to_datetime(node.last_seen_at) if node.last_seen_at else None,
    )


def node_event_view(event: NodeEvent) -> NodeEventView:
    return NodeEventView(
        id=event.id,
        node_id=event.node_id,
        kind=event.kind,
        reason=event.reason,
        created_at=to_datetime(event.created_at),
    )
