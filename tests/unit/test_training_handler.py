"""The train_lora handler's resume: the newest checkpoint that reads back wins, and every one
passed over is reported with its reason (for the attempt history)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from imagefleet.protocol import Assignment, ResumeCheckpoint
from imagefleet.worker.handlers.base import JobContext
from imagefleet.worker.handlers.train_lora import find_resume_point
from imagefleet.worker.training.archive import pack_checkpoint
from tests.training_support import CheckpointStore, tiny_params, trainer

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def offer(
    checkpoint_id: int, step: int, data: bytes, sha256: str | None = None
) -> ResumeCheckpoint:
    return ResumeCheckpoint(
        checkpoint_id=checkpoint_id,
        step=step,
        url=f"/checkpoints/{checkpoint_id}",
        sha256=sha256 or hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
    )


def test_corrupt_and_altered_checkpoints_fall_back_to_the_newest_sound_one(
    demo_dir: Path, tmp_path: Path
) -> None:
    params = tiny_params(steps=8, checkpoint_every=2)
    store = CheckpointStore(tmp_path / "store")
    trainer(demo_dir, tmp_path / "first", params).train(on_checkpoint=store)
    packed = {
        step: pack_checkpoint(store.path(step), tmp_path / f"{step}.zip").read_bytes()
        for step in (2, 4, 6)
    }
    truncated = packed[6][: len(packed[6]) // 2]  # uploaded broken: its hash is its own
    files = {"/checkpoints/3": truncated, "/checkpoints/2": packed[4], "/checkpoints/1": packed[2]}
    checkpoints = [
        offer(3, 6, truncated),
        offer(2, 4, packed[4], sha256="0" * 64),  # altered in storage after it was recorded
        offer(1, 2, packed[2]),
    ]
    assignment = Assignment(
        job_id="j",
        attempt_id="a",
        fencing_token=2,
        lease_seconds=30,
        lease_expires_at=datetime.now(UTC),
        kind="train_lora",
        params={},
        models=[],
        checkpoints=checkpoints,
    )
    ctx = JobContext(
        assignment=assignment,
        engine=None,
        cache=None,  # type: ignore[arg-type]
        fetch=files.__getitem__,
        on_step=lambda step, total: None,
        should_stop=lambda: False,
    )
    identity = trainer(demo_dir, tmp_path / "second", params).identity
    point, skipped = find_resume_point(ctx, tmp_path / "resume", identity)
    assert point.state is not None and point.state.step == 2
    assert [s.checkpoint_id for s in skipped] == [3, 2]
    assert "not a readable checkpoint archive" in skipped[0].reason
    assert "does not match its recorded sha256" in skipped[1].reason
