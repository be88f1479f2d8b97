"""The artifact store interface: a flat namespace of keys holding immutable files.

Two kinds of store implement it: a local directory (artifacts flow through the orchestrator's
API) and an S3-compatible bucket (workers may upload and clients may download directly, through
presigned URLs, so large files never pass through the orchestrator). Methods that only make sense
for the second kind return None on the first, so callers can fall back to the API path.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

_KEY = re.compile(r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-][A-Za-z0-9_.\-]*)*$")


class ArtifactTooLarge(ValueError):
    """An upload went past the configured size limit."""


class ArtifactStoreError(RuntimeError):
    """The store failed an operation for a reason other than a bad request (network, permissions,
    a server error), so the caller should answer 503 rather than blame its client."""


class ArtifactStoreUnavailable(ArtifactStoreError):
    """The start-up check found the store unusable; the message names the endpoint or directory and
    says what to fix, because it is shown to an operator reading logs."""


class ArtifactUploadRejected(ValueError):
    """A direct (presigned) upload could not be finished as described: unknown upload id, missing
    or mismatched parts. The uploader sent something wrong, so this is a client error."""


@dataclass(frozen=True)
class ArtifactInfo:
    """What a store knows about a stored file without reading it."""

    size_bytes: int
    etag: str
    """An opaque tag that changes when the content does; not necessarily a content hash."""


@dataclass(frozen=True)
class PresignedPart:
    """One part of a direct multipart upload: PUT exactly `size_bytes` bytes to `url` and keep the
    ETag response header for `finish_multipart`."""

    part_number: int
    url: str
    size_bytes: int


@dataclass(frozen=True)
class MultipartPlan:
    """A started direct multipart upload: the parts cover the whole file in order."""

    upload_id: str
    part_size: int
    parts: tuple[PresignedPart, ...]


def check_key(key: str) -> str:
    """Refuses keys that could escape the store (`..`, absolute paths, odd characters)."""
    if len(key) > 300 or not _KEY.match(key) or ".." in key.split("/"):
        raise ValueError(f"invalid artifact key {key!r}")
    return key


class ArtifactStore(Protocol):
    # Files above this size go to the store in parts; None when the store has no direct path
    # (workers and clients then move files through the API).
    direct_multipart_threshold: int | None

    async def put_stream(
        self, key: str, chunks: AsyncIterator[bytes], max_bytes: int
    ) -> tuple[int, str]:
        """Stores the chunks under key; returns (size, sha256). Raises ArtifactTooLarge."""
        ...

    def read(self, key: str) -> bytes:
        """The whole file; raises FileNotFoundError for an unknown key."""
        ...

    def delete(self, key: str) -> None: ...

    def delete_many(self, keys: list[str]) -> int:
        """Deletes every key (missing ones included, so retention sweeps are idempotent) and
        returns how many keys are now gone. All keys are checked before anything is deleted."""
        ...

    def head(self, key: str) -> ArtifactInfo | None:
        """Size and tag of a stored file, or None when the key holds nothing."""
        ...

    def presigned_put(self, key: str, content_type: str, max_bytes: int) -> str | None:
        """A URL a worker can PUT the file to without credentials, or None when uploads must go
        through the API. The URL cannot enforce max_bytes: check with `verify_direct_upload`."""
        ...

    def presigned_get(self, key: str, filename: str | None = None) -> str | None:
        """An expiring download URL, or None when downloads must go through the API."""
        ...

    def start_multipart(self, key: str, size_bytes: int, content_type: str) -> MultipartPlan | None:
        """Starts a direct upload of a big file in parts, or returns None when unsupported."""
        ...

    def finish_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> None:
        """Assembles the uploaded parts, given as (part_number, etag); raises
        ArtifactUploadRejected when the store refuses them."""
        ...

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Drops a started upload and its parts; succeeds when it is already gone."""
        ...

    def check(self) -> None:
        """Proves the store is reachable and writable; raises ArtifactStoreUnavailable."""
        ...


def verify_direct_upload(store: ArtifactStore, key: str, max_bytes: int) -> ArtifactInfo:
    """Confirms a presigned upload arrived within the size limit, deleting it when it did not.

    A presigned PUT URL cannot carry a size cap (only S3's POST policies can), so the orchestrator
    calls this when a worker reports a direct upload as done, before recording the artifact.
    """
    info = store.head(key)
    if info is None:
        raise FileNotFoundError(
            f"artifact {key!r} is not in the store: the direct upload did not arrive; "
            "upload it again before reporting it"
        )
    if info.size_bytes > max_bytes:
        store.delete(key)
        raise ArtifactTooLarge(
            f"artifact {key!r} is {info.size_bytes} bytes, over the limit of {max_bytes} bytes; "
            "it was deleted"
        )
    return info
