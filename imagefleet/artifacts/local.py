"""Artifacts in a local directory: the default for one machine.

Nothing here is reachable without the orchestrator, so the presigned and multipart methods return
None (or refuse) and every byte flows through the API instead.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from imagefleet.artifacts.base import (
    ArtifactInfo,
    ArtifactStoreUnavailable,
    ArtifactTooLarge,
    ArtifactUploadRejected,
    MultipartPlan,
    check_key,
)


class LocalArtifactStore:
    """Files under `root/<key>`, written to a temporary file and renamed so readers never see a
    half-written artifact."""

    direct_multipart_threshold: int | None = None

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """Where `key` lives. `check_key` keeps it inside the root (relative, no `..` segment,
        no segment starting with a dot), so the path is joined, not resolved: resolving cost a
        system call per directory level on every read and write (2% of the server's CPU in a
        control-plane profile), and guarded only against symlinks planted inside the data
        directory, whose owner is trusted anyway."""
        return self.root / check_key(key)

    async def put_stream(
        self, key: str, chunks: AsyncIterator[bytes], max_bytes: int
    ) -> tuple[int, str]:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as tmp:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise ArtifactTooLarge(f"upload exceeds the limit of {max_bytes} bytes")
                    digest.update(chunk)
                    tmp.write(chunk)
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return size, digest.hexdigest()

    def read(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def delete_many(self, keys: list[str]) -> int:
        paths = [self.path(key) for key in dict.fromkeys(keys)]
        for path in paths:
            path.unlink(missing_ok=True)
        return len(paths)

    def head(self, key: str) -> ArtifactInfo | None:
        try:
            stat = self.path(key).stat()
        except FileNotFoundError:
            return None
        # Hashing a multi-GB file for a tag would be slow; size and mtime change on every rewrite.
        return ArtifactInfo(size_bytes=stat.st_size, etag=f"{stat.st_mtime_ns:x}-{stat.st_size:x}")

    def presigned_put(self, key: str, content_type: str, max_bytes: int) -> str | None:
        check_key(key)
        return None

    def presigned_get(self, key: str, filename: str | None = None) -> str | None:
        check_key(key)
        return None

    def start_multipart(self, key: str, size_bytes: int, content_type: str) -> MultipartPlan | None:
        check_key(key)
        return None

    def finish_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> None:
        raise ArtifactUploadRejected(
            f"the local artifact store has no multipart upload {upload_id!r} for {key!r}: "
            "it never starts one, so upload the file through the API instead"
        )

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Nothing to abort: `start_multipart` never starts an upload here."""
        check_key(key)

    def check(self) -> None:
        """Writes and removes a probe file, so a read-only or missing mount fails at start-up
        rather than on the first job's upload."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe-") as probe:
                probe.write(b"imagefleet")
                probe.flush()
        except OSError as exc:
            raise ArtifactStoreUnavailable(
                f"artifact directory {self.root} is not writable ({exc}); "
                "fix its permissions or point IMAGEFLEET_ARTIFACTS_DIR at a writable directory"
            ) from exc
