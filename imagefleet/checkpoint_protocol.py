"""Wire models of direct checkpoint uploads (S3-compatible artifact stores): the worker asks
for a presigned PUT URL for its checkpoint at a step, puts the archive straight into the
bucket, then reports it stored; the orchestrator checks the object and runs the same fenced
`checkpoint` transition as an upload through the API (orchestrator/checkpoint_direct.py)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from imagefleet.protocol import Strict


class CheckpointUploadTarget(BaseModel):
    """Where to PUT the checkpoint archive (Content-Type application/zip); null when the store
    takes checkpoints through the API only (local disk): then PUT the archive to the API."""

    url: str | None = None


class StoredCheckpoint(Strict):
    """A checkpoint the worker put through its presigned URL: its size (checked against the
    object) and sha256 (recorded; every resuming worker checks the file against it)."""

    size_bytes: int = Field(ge=1, le=2**50)
    sha256: str = Field(pattern="^[0-9a-f]{64}$")
