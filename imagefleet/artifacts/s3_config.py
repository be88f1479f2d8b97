"""S3 artifact store settings, importable without boto3 (the orchestrator reads them to decide
which store to build, and the base install has no boto3).

S3 (and R2, MinIO, SeaweedFS) accept at most 10,000 parts per upload and every part but the
last must hold at least 5 MiB; the limits live here so settings can be validated against them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from imagefleet.artifacts.base import check_key

MIB = 1 << 20
MIN_PART_BYTES = 5 * MIB
MAX_PART_BYTES = 5 * 1024 * MIB
MAX_PARTS = 10_000
MAX_SINGLE_PUT_BYTES = 5 * 1024 * MIB
MAX_OBJECT_BYTES = 5 * 1024 * 1024 * MIB


class S3Config(BaseModel):
    """Where the bucket is and how to talk to it; see docs/storage.md for each provider.

    Every field can be set as `IMAGEFLEET_S3_<FIELD>` (upper case); see `from_env`.
    """

    model_config = ConfigDict(frozen=True)

    endpoint_url: str | None = Field(None, description="S3 API URL; None means AWS S3.")
    presign_endpoint_url: str | None = Field(
        None, description="URL workers and clients reach the bucket at, when it differs."
    )
    region: str = "us-east-1"
    bucket: str = Field(min_length=3, max_length=63)
    prefix: str = Field("", description="Prepended to every key, so buckets can be shared.")
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    presign_expiry_seconds: int = Field(3600, ge=1, le=7 * 24 * 3600)
    multipart_threshold_bytes: int = Field(16 * MIB, ge=1, le=MAX_SINGLE_PUT_BYTES)
    multipart_part_bytes: int = Field(8 * MIB, ge=MIN_PART_BYTES, le=MAX_PART_BYTES)
    addressing_style: Literal["path", "virtual", "auto"] = "path"

    @field_validator("prefix")
    @classmethod
    def _clean_prefix(cls, prefix: str) -> str:
        prefix = prefix.strip("/")
        if prefix:
            try:
                check_key(prefix)
            except ValueError:
                raise ValueError(
                    f"prefix {prefix!r} must be letters, digits, '_', '-', '.' and '/' "
                    "separated segments, without '..'"
                ) from None
        return prefix

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> S3Config | None:
        """The config from `IMAGEFLEET_S3_*` variables, or None when no bucket is set (the
        orchestrator then keeps the local store). Empty variables count as unset."""
        env = os.environ if environ is None else environ
        names = {field: f"IMAGEFLEET_S3_{field.upper()}" for field in cls.model_fields}
        if not env.get(names["bucket"]):
            return None
        values = {field: env[name] for field, name in names.items() if env.get(name)}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{names.get(str(error['loc'][0]), '?') + ': ' if error['loc'] else ''}"
                f"{error['msg'].removeprefix('Value error, ')}"
                for error in exc.errors()
            )
            raise ValueError(f"invalid S3 artifact store settings: {problems}") from None

    @model_validator(mode="after")
    def _keys_in_pairs(self) -> S3Config:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError(
                "set both IMAGEFLEET_S3_ACCESS_KEY_ID and IMAGEFLEET_S3_SECRET_ACCESS_KEY "
                "(access_key_id, secret_access_key), or neither to use the AWS credential chain "
                "(environment, profile, instance role)"
            )
        return self

    def describe(self) -> str:
        """Bucket and endpoint, for error messages an operator can act on."""
        endpoint = self.endpoint_url or f"AWS S3 ({self.region})"
        return f"bucket {self.bucket!r} at {endpoint}"
