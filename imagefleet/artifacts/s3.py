"""Artifacts in an S3-compatible bucket (AWS S3, Cloudflare R2, MinIO, SeaweedFS).

Chosen over the local directory when the orchestrator runs on more than one machine, or when
files are big enough (LoRA checkpoints) that they should go straight between workers, clients and
the bucket through presigned URLs instead of through the orchestrator. boto3 is blocking, so the
async `put_stream` runs its calls in threads; the other methods are blocking like the local
store's and belong in a threadpool when called from async code.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import mimetypes
import threading
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from imagefleet.artifacts.base import (
    ArtifactInfo,
    ArtifactStoreError,
    ArtifactStoreUnavailable,
    ArtifactTooLarge,
    MultipartPlan,
    check_key,
)
from imagefleet.artifacts.multipart import (
    MultipartUploads,
    PartSplitter,
    error_code,
    store_failure,
)
from imagefleet.artifacts.s3_config import MAX_SINGLE_PUT_BYTES, S3Config

S3Client = Any  # boto3 clients are generated at run time and carry no static type.

_SESSION_LOCK = threading.Lock()


@functools.cache
def _shared_session() -> boto3.session.Session:
    """One session for every store: a fresh one re-reads the S3 service model (~0.3 s). Sessions
    are not thread-safe, hence the lock around client creation; clients themselves are."""
    return boto3.session.Session()


_MISSING = {"404", "NoSuchKey", "NotFound"}
_BAD_CREDENTIALS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}


def content_disposition(filename: str) -> str:
    """An `inline` Content-Disposition naming the file, safe for any name: quotes and control
    characters cannot break the header, and non-ASCII names survive through `filename*`."""
    plain = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename
    )
    header = f'inline; filename="{plain}"'
    if plain != filename:
        header += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return header


class S3ArtifactStore:
    """Files under `<prefix>/<key>` in one bucket."""

    def __init__(self, config: S3Config) -> None:
        self.config = config
        self.direct_multipart_threshold: int | None = config.multipart_threshold_bytes
        self._client = self._make_client(config.endpoint_url)
        self._presigner = (
            self._make_client(config.presign_endpoint_url)
            if config.presign_endpoint_url
            else self._client
        )
        self._multipart = MultipartUploads(
            self._client,
            self._presigner,
            config.bucket,
            config.describe(),
            config.presign_expiry_seconds,
        )

    def _make_client(self, endpoint_url: str | None) -> S3Client:
        config = self.config
        secret = config.secret_access_key.get_secret_value() if config.secret_access_key else None
        with _SESSION_LOCK:
            session = _shared_session()
            client = session.client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=config.region,
                aws_access_key_id=config.access_key_id,
                aws_secret_access_key=secret,
                config=Config(
                    signature_version="s3v4",
                    s3={"addressing_style": config.addressing_style},
                    connect_timeout=5,
                    read_timeout=60,
                    retries={"max_attempts": 3, "mode": "standard"},
                    # Newer boto3 adds CRC checksums by default, which several S3-compatible servers
                    # reject; only send them where the API requires them.
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                ),
            )
        return client

    def s3_key(self, key: str) -> str:
        """The object key in the bucket: checked, then prefixed."""
        check_key(key)
        return f"{self.config.prefix}/{key}" if self.config.prefix else key

    def _failed(self, action: str, key: str, exc: Exception) -> ArtifactStoreError:
        return store_failure(action, key, self.config.describe(), exc)

    async def put_stream(
        self, key: str, chunks: AsyncIterator[bytes], max_bytes: int
    ) -> tuple[int, str]:
        """Small files go up in one PUT once complete; past the threshold the file streams into a
        multipart upload part by part, which is aborted if anything fails, so a failed or too
        large upload leaves neither an object nor stored parts behind."""
        object_key = self.s3_key(key)
        content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
        splitter = PartSplitter(self.config.multipart_part_bytes)
        digest = hashlib.sha256()
        size = 0
        upload_id: str | None = None
        etags: list[tuple[int, str]] = []

        async def send(upload_id: str, part: bytes) -> None:
            number = len(etags) + 1
            etag = await asyncio.to_thread(
                self._multipart.upload_part, object_key, upload_id, number, part
            )
            etags.append((number, etag))

        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise ArtifactTooLarge(f"upload exceeds the limit of {max_bytes} bytes")
                digest.update(chunk)
                splitter.feed(chunk)
                if upload_id is None and len(splitter) > self.config.multipart_threshold_bytes:
                    upload_id = await asyncio.to_thread(
                        self._multipart.create, object_key, content_type
                    )
                if upload_id is not None:
                    for part in splitter.full_parts():
                        await send(upload_id, part)
            if upload_id is None:
                await asyncio.to_thread(self._put_object, object_key, splitter.rest(), content_type)
            else:
                if len(splitter):
                    await send(upload_id, splitter.rest())
                await asyncio.to_thread(self._multipart.complete, object_key, upload_id, etags)
        except BaseException:
            if upload_id is not None:
                # Called directly, not in a thread: a cancelled task could not await one, and
                # stored parts are billed storage that nothing else would clean up.
                with contextlib.suppress(ArtifactStoreError):
                    self._multipart.abort(object_key, upload_id)
            raise
        return size, digest.hexdigest()

    def _put_object(self, object_key: str, data: bytes, content_type: str) -> None:
        try:
            self._client.put_object(
                Bucket=self.config.bucket, Key=object_key, Body=data, ContentType=content_type
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._failed("upload", object_key, exc) from exc

    def read(self, key: str) -> bytes:
        object_key = self.s3_key(key)
        try:
            response = self._client.get_object(Bucket=self.config.bucket, Key=object_key)
            return bytes(response["Body"].read())
        except ClientError as exc:
            if error_code(exc) in _MISSING:
                raise FileNotFoundError(
                    f"artifact {key!r} is not in {self.config.describe()}"
                ) from exc
            raise self._failed("download", object_key, exc) from exc
        except BotoCoreError as exc:
            raise self._failed("download", object_key, exc) from exc

    def read_external(self, bucket: str, object_key: str, max_bytes: int) -> bytes:
        """An object outside the store (a train_lora dataset in a bucket the operator allows),
        read with the store's credentials and never more than ``max_bytes``: FileNotFoundError
        when it is missing, ValueError when it is larger."""
        where = f"s3://{bucket}/{object_key}"
        try:
            response = self._client.get_object(Bucket=bucket, Key=object_key)
            if int(response.get("ContentLength", 0)) > max_bytes:
                response["Body"].close()
                raise ValueError(f"{where} is larger than {max_bytes} bytes")
            data = bytes(response["Body"].read(max_bytes + 1))
        except ClientError as exc:
            if error_code(exc) in _MISSING or error_code(exc) == "NoSuchBucket":
                raise FileNotFoundError(f"{where} does not exist") from exc
            raise store_failure("download", object_key, f"bucket {bucket}", exc) from exc
        except BotoCoreError as exc:
            raise store_failure("download", object_key, f"bucket {bucket}", exc) from exc
        if len(data) > max_bytes:
            raise ValueError(f"{where} is larger than {max_bytes} bytes")
        return data

    def delete(self, key: str) -> None:
        object_key = self.s3_key(key)
        try:
            self._client.delete_object(Bucket=self.config.bucket, Key=object_key)
        except (ClientError, BotoCoreError) as exc:
            raise self._failed("delete", object_key, exc) from exc

    def delete_many(self, keys: list[str]) -> int:
        """DeleteObjects in batches of 1,000 (the API's limit). S3 does not say whether a key
        existed, so missing keys count as deleted."""
        object_keys = list(dict.fromkeys(self.s3_key(key) for key in keys))
        errors: list[str] = []
        for start in range(0, len(object_keys), 1000):
            batch = object_keys[start : start + 1000]
            try:
                response = self._client.delete_objects(
                    Bucket=self.config.bucket,
                    Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                )
            except (ClientError, BotoCoreError) as exc:
                raise self._failed("batch delete", batch[0], exc) from exc
            errors += [f"{e.get('Key')}: {e.get('Code')}" for e in response.get("Errors", [])]
        if errors:
            raise ArtifactStoreError(
                f"S3 refused to delete {len(errors)} of {len(object_keys)} keys in "
                f"{self.config.describe()} ({', '.join(errors[:5])}); check delete permission"
            )
        return len(object_keys)

    def head(self, key: str) -> ArtifactInfo | None:
        object_key = self.s3_key(key)
        try:
            response = self._client.head_object(Bucket=self.config.bucket, Key=object_key)
        except ClientError as exc:
            if error_code(exc) in _MISSING:
                return None
            raise self._failed("HEAD", object_key, exc) from exc
        except BotoCoreError as exc:
            raise self._failed("HEAD", object_key, exc) from exc
        return ArtifactInfo(
            size_bytes=int(response["ContentLength"]), etag=str(response["ETag"]).strip('"')
        )

    def _presign(self, method: str, params: dict[str, Any]) -> str:
        url = self._presigner.generate_presigned_url(
            method,
            Params={"Bucket": self.config.bucket, **params},
            ExpiresIn=self.config.presign_expiry_seconds,
        )
        return str(url)

    def presigned_put(self, key: str, content_type: str, max_bytes: int) -> str | None:
        """The uploader must send the same Content-Type header. The URL cannot cap the size, so
        verify with `verify_direct_upload` before accepting the artifact."""
        if max_bytes > MAX_SINGLE_PUT_BYTES:
            raise ValueError(
                f"a single PUT holds at most {MAX_SINGLE_PUT_BYTES} bytes; "
                f"use start_multipart for files up to {max_bytes} bytes"
            )
        return self._presign("put_object", {"Key": self.s3_key(key), "ContentType": content_type})

    def presigned_get(self, key: str, filename: str | None = None) -> str | None:
        params: dict[str, Any] = {"Key": self.s3_key(key)}
        if filename:
            params["ResponseContentDisposition"] = content_disposition(filename)
        return self._presign("get_object", params)

    def start_multipart(self, key: str, size_bytes: int, content_type: str) -> MultipartPlan | None:
        """Each part URL only accepts its exact share of `size_bytes`; see MultipartUploads.plan."""
        return self._multipart.plan(
            self.s3_key(key), size_bytes, self.config.multipart_part_bytes, content_type
        )

    def finish_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> None:
        self._multipart.complete(self.s3_key(key), upload_id, parts)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        self._multipart.abort(self.s3_key(key), upload_id)

    def check(self) -> None:
        """HEAD the bucket, then write and delete a probe object under the prefix, so wrong
        settings stop the orchestrator at start-up instead of failing the first job's upload."""
        where = self.config.describe()
        try:
            self._client.head_bucket(Bucket=self.config.bucket)
        except ClientError as exc:
            raise self._diagnose(exc) from exc
        except NoCredentialsError as exc:
            raise ArtifactStoreUnavailable(
                f"no S3 credentials for {where}: set IMAGEFLEET_S3_ACCESS_KEY_ID and "
                "IMAGEFLEET_S3_SECRET_ACCESS_KEY, or configure the AWS credential chain"
            ) from exc
        except BotoCoreError as exc:
            raise ArtifactStoreUnavailable(
                f"cannot reach S3 endpoint for {where}: {exc}; check IMAGEFLEET_S3_ENDPOINT_URL "
                "and that the server is running and reachable from this machine"
            ) from exc
        probe = self.s3_key(f"_imagefleet_probe/{uuid.uuid4().hex}")
        for action in ("write", "delete"):
            try:
                if action == "write":
                    self._client.put_object(Bucket=self.config.bucket, Key=probe, Body=b"probe")
                else:
                    self._client.delete_object(Bucket=self.config.bucket, Key=probe)
            except (ClientError, BotoCoreError) as exc:
                raise ArtifactStoreUnavailable(
                    f"cannot {action} probe object {probe!r} in {where}: {exc}; give these "
                    f"credentials permission to {action} objects under the prefix "
                    f"{self.config.prefix or '(none)'!r}"
                ) from exc

    def _diagnose(self, exc: ClientError) -> ArtifactStoreUnavailable:
        """HEAD responses carry no error body, so a 403 is followed by a one-key listing, whose
        error code tells bad credentials from missing permission."""
        where = self.config.describe()
        code = error_code(exc)
        if code == "403":
            try:
                self._client.list_objects_v2(
                    Bucket=self.config.bucket, Prefix=self.config.prefix, MaxKeys=1
                )
            except ClientError as listing:
                code = error_code(listing)
            except BotoCoreError:
                pass
        if code in {"404", "NoSuchBucket"}:
            return ArtifactStoreUnavailable(
                f"{where} does not exist: create the bucket, or fix IMAGEFLEET_S3_BUCKET "
                "(and IMAGEFLEET_S3_ENDPOINT_URL if this is the wrong server)"
            )
        if code in _BAD_CREDENTIALS:
            return ArtifactStoreUnavailable(
                f"{where} rejected the credentials ({code}): check IMAGEFLEET_S3_ACCESS_KEY_ID "
                "and IMAGEFLEET_S3_SECRET_ACCESS_KEY"
            )
        if code in {"403", "AccessDenied", "AllAccessDisabled"}:
            return ArtifactStoreUnavailable(
                f"{where} denied access ({code}): the credentials are valid but may not use this "
                "bucket; grant them read, write and delete on it"
            )
        if code in {"301", "PermanentRedirect", "AuthorizationHeaderMalformed"}:
            return ArtifactStoreUnavailable(
                f"{where} is in another region ({code}): fix IMAGEFLEET_S3_REGION"
            )
        return ArtifactStoreUnavailable(
            f"{where} answered the bucket check with {code or 'an error'}: {exc}; "
            "check IMAGEFLEET_S3_ENDPOINT_URL points at an S3 API"
        )
