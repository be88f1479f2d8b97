"""``s3://bucket/key`` model sources, through the worker's configured S3 credentials.

A key is one file; a key ending in ``/`` is a folder model (every object under it, filtered by
the same kind patterns as hf: sources). Objects are fetched through presigned GET URLs with the
resumable HTTP downloader, so S3 downloads resume, are size-limited and report progress exactly
like https ones. The endpoint is operator configuration, not user input, so it may be private
(a MinIO or SeaweedFS on the LAN).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from imagefleet.worker.model_settings import ModelSettings
from imagefleet.worker.source_errors import SourceError
from imagefleet.worker.source_hf import ANY_KIND, IGNORED, PATTERNS
from imagefleet.worker.source_http import HttpOptions, Progress, download

PREFIX = "s3://"
PRESIGN_SECONDS = 3600


@dataclass(frozen=True)
class S3Source:
    bucket: str
    key: str

    @property
    def is_folder(self) -> bool:
        return self.key.endswith("/")


def parse(source: str) -> S3Source:
    parsed = urlparse(source)
    key = parsed.path.lstrip("/")
    if parsed.scheme != "s3" or not parsed.netloc or not key:
        raise SourceError(f"{source!r} is not an s3 source; expected s3://bucket/key")
    if ".." in PurePosixPath(key).parts:
        raise SourceError(f"{source!r}: '..' is not allowed in an S3 key")
    return S3Source(bucket=parsed.netloc, key=key)


def fetch_s3(
    source: str,
    dest: Path,
    *,
    kind: str | None,
    max_bytes: int,
    settings: ModelSettings,
    check_name: Any,
    progress: Progress | None,
) -> Path:
    """Downloads the object (or the folder's objects) under dest; returns the model's path.

    ``check_name(name)`` refuses file names the worker will not load (pickles, by policy).
    """
    spec = parse(source)
    client = _client(settings)
    options = HttpOptions(allow_private=True)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if not spec.is_folder:
            name = PurePosixPath(spec.key).name
            check_name(name)
            url = _presign(client, spec.bucket, spec.key)
            return download(
                url, dest / name, max_bytes=max_bytes, options=options, progress=progress
            )
        objects = _list_folder(client, spec, kind)
    except SourceError:
        raise
    except Exception as exc:  # botocore's errors: bad credentials, missing bucket or key
        raise SourceError(f"S3 source {source} failed: {exc}") from exc
    total = sum(size for _, size in objects)
    if total > max_bytes:
        raise SourceError(f"{source} is {total} bytes, larger than the registered {max_bytes}")
    for relative, size in objects:
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        url = _presign(client, spec.bucket, spec.key + relative)
        download(url, target, max_bytes=size, options=options, progress=progress)
    return dest


def _list_folder(client: Any, spec: S3Source, kind: str | None) -> list[tuple[str, int]]:
    patterns = PATTERNS.get(kind or "", ANY_KIND)
    found = []
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=spec.bucket, Prefix=spec.key
    ):
        for item in page.get("Contents", []):
            relative = item["Key"][len(spec.key) :]
            if ".." in PurePosixPath(relative).parts or not relative:
                continue
            wanted = any(fnmatch.fnmatch(relative, p) for p in patterns)
            if wanted and not any(fnmatch.fnmatch(relative, p) for p in IGNORED):
                found.append((relative, int(item["Size"])))
    if not found:
        raise SourceError(
            f"s3://{spec.bucket}/{spec.key} holds no files of the kind {kind or 'model'}"
        )
    return sorted(found)


def _presign(client: Any, bucket: str, key: str) -> str:
    url: str = client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=PRESIGN_SECONDS
    )
    return url


def _client(settings: ModelSettings) -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:
        raise SourceError("s3:// sources need boto3 (pip install imagefleet[s3])") from exc
    secret = settings.s3_secret_access_key
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=secret.get_secret_value() if secret is not None else None,
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
    )
