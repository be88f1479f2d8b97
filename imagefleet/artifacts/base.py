"""The artifact store interface: a flat namespace of keys holding immutable files."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Protocol

_KEY = re.compile(r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-][A-Za-z0-9_.\-]*)*$")


class ArtifactTooLarge(ValueError):
    """An upload went past the configured size limit."""


def check_key(key: str) -> str:
    """Refuses keys that could escape the store (`..`, absolute paths, odd characters)."""
    if len(key) > 300 or not _KEY.match(key) or ".." in key.split("/"):
        raise ValueError(f"invalid artifact key {key!r}")
    return key


class ArtifactStore(Protocol):
    async def put_stream(
        self, key: str, chunks: AsyncIterator[bytes], max_bytes: int
    ) -> tuple[int, str]:
        """Stores the chunks under key; returns (size, sha256). Raises ArtifactTooLarge."""
        ...

    def read(self, key: str) -> bytes:
        """The whole file; raises FileNotFoundError for an unknown key."""
        ...

    def delete(self, key: str) -> None: ...
