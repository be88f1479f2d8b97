"""A train_lora dataset named by where it lives instead of uploaded: an https URL or an
``s3://bucket/key`` object (a zip in the format of training/dataset.py), with an optional
sha256 the fetched bytes must match.

The orchestrator fetches and validates it at submit (orchestrator/dataset_import.py) and stores
it as an ordinary dataset input, so a job never reaches a worker with a dataset that cannot be
read: the job's params then name the stored input's id, exactly as if the zip had been uploaded.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_URL_CHARS = 2000


class DatasetSource(BaseModel):
    """Exactly one of ``url`` and ``s3``; ``sha256`` pins the bytes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = Field(
        None,
        max_length=MAX_URL_CHARS,
        description="An http(s) URL of the dataset zip, fetched once by the API at submit.",
    )
    s3: str | None = Field(
        None,
        max_length=MAX_URL_CHARS,
        description="s3://bucket/key of the dataset zip, in a bucket the operator allows "
        "(IMAGEFLEET_DATASET_S3_BUCKETS).",
    )
    sha256: str | None = Field(
        None, pattern="^[0-9a-f]{64}$", description="The zip's sha256, checked after fetching."
    )

    @model_validator(mode="after")
    def _one_place(self) -> DatasetSource:
        if (self.url is None) == (self.s3 is None):
            raise ValueError('give exactly one of "url" and "s3" for a dataset source')
        if self.url is not None:
            parsed = urlparse(self.url)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise ValueError(f"dataset url {self.url!r}: expected an http(s) URL")
        if self.s3 is not None:
            s3_location(self.s3)
        return self


def s3_location(uri: str) -> tuple[str, str]:
    """(bucket, key) of ``s3://bucket/key``; raises ValueError for anything else."""
    parsed = urlparse(uri)
    key = parsed.path.lstrip("/")
    if parsed.scheme != "s3" or not parsed.netloc or not key or key.endswith("/"):
        raise ValueError(f"dataset s3 {uri!r}: expected s3://bucket/key of one object")
    if ".." in PurePosixPath(key).parts:
        raise ValueError(f"dataset s3 {uri!r}: '..' is not allowed in the key")
    return parsed.netloc, key
