"""Picks the artifact store the configuration asks for."""

from __future__ import annotations

from imagefleet.artifacts.base import ArtifactStore, ArtifactStoreUnavailable
from imagefleet.artifacts.local import LocalArtifactStore
from imagefleet.artifacts.s3_config import S3Config
from imagefleet.config import Settings


def artifact_store_for(settings: Settings) -> ArtifactStore:
    """The configured artifact store: S3-compatible when IMAGEFLEET_S3_BUCKET is set (see
    docs/storage.md), else the local directory."""
    s3 = S3Config.from_env()
    if s3 is None:
        return LocalArtifactStore(settings.artifacts_path)
    try:
        from imagefleet.artifacts.s3 import S3ArtifactStore
    except ImportError as exc:
        raise ArtifactStoreUnavailable(
            "IMAGEFLEET_S3_BUCKET is set but boto3 is missing: pip install 'imagefleet[s3]'"
        ) from exc
    return S3ArtifactStore(s3)
