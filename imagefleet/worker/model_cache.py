"""The worker's disk cache of models, keyed by content hash.

A model is fetched into a staging folder, its sha256 checked against the registry's, and only
then moved into place, so the cache never holds a partial or tampered model and two workers
sharing a cache folder never load each other's half-written files.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path

from imagefleet.hashing import path_sha256
from imagefleet.worker.sources import SourceError, fetch

log = logging.getLogger("imagefleet.worker.cache")


class VerificationError(RuntimeError):
    """What was fetched does not hash to what the registry recorded."""


class ModelCache:
    def __init__(self, root: Path, *, allow_private_urls: bool = False) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.allow_private_urls = allow_private_urls

    def cached(self) -> list[str]:
        """sha256s of every model on disk (sent with each claim so placement can prefer us)."""
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and len(p.name) == 64)

    def ensure(self, source: str, sha256: str, size_bytes: int) -> tuple[Path, float]:
        """The verified local path of the model, fetching it if needed; and seconds spent."""
        started = time.perf_counter()
        entry = self.root / sha256
        if entry.is_dir():
            return self._model_path(entry), 0.0
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=".fetch-"))
        try:
            fetched = fetch(
                source,
                staging / "model",
                max_bytes=size_bytes,
                allow_private=self.allow_private_urls,
            )
            actual, _ = path_sha256(fetched)
            if actual != sha256:
                raise VerificationError(
                    f"model from {source} hashes to {actual}, but the registry says {sha256}; "
                    "the source changed since it was registered (re-add it) or was tampered with"
                )
            try:
                (staging / "model").rename(entry)
            except OSError:
                if not entry.is_dir():  # another process sharing the cache won the race
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("cached model %s from %s", sha256[:12], source)
        return self._model_path(entry), time.perf_counter() - started

    @staticmethod
    def _model_path(entry: Path) -> Path:
        """A single-file model is the one file in its entry; a folder model is the entry."""
        children = list(entry.iterdir())
        if len(children) == 1 and children[0].is_file():
            return children[0]
        return entry


__all__ = ["ModelCache", "SourceError", "VerificationError"]
