"""S3 multipart uploads: the limits, the part arithmetic, and the calls that drive an upload.

S3 (and R2, MinIO, SeaweedFS) accept at most 10,000 parts per upload, and every part but the last
must hold at least 5 MiB. Big files therefore need bigger parts than the configured size, and a
stream must be cut into parts of exactly the chosen size as its chunks arrive. Kept apart from
`s3.py` so the store reads as the artifact interface and this module as the S3 mechanics.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from imagefleet.artifacts.base import (
    ArtifactStoreError,
    ArtifactUploadRejected,
    MultipartPlan,
    PresignedPart,
)
from imagefleet.artifacts.s3_config import (
    MAX_OBJECT_BYTES,
    MAX_PARTS,
    MIB,
    MIN_PART_BYTES,
)

_REJECTED_PARTS = {"NoSuchUpload", "InvalidPart", "InvalidPartOrder", "EntityTooSmall"}


def error_code(exc: ClientError) -> str:
    """The S3 error code (`NoSuchKey`), or the HTTP status for bodiless HEAD errors (`404`)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def store_failure(action: str, key: str, where: str, exc: Exception) -> ArtifactStoreError:
    """One wording for every failed S3 call, naming the object and the bucket."""
    return ArtifactStoreError(
        f"S3 {action} of {key!r} failed on {where}: {exc}; "
        "check that the server is up and the credentials may read and write the bucket"
    )


def part_size_for(size_bytes: int, preferred_part_bytes: int) -> int:
    """The part size for a file of known size: the preferred one unless the file would need more
    than 10,000 parts, then the smallest whole number of MiB that fits."""
    if size_bytes <= 0:
        raise ValueError(f"a multipart upload needs a positive size, got {size_bytes} bytes")
    if size_bytes > MAX_OBJECT_BYTES:
        raise ValueError(
            f"{size_bytes} bytes is over S3's object limit of {MAX_OBJECT_BYTES} bytes (5 TiB)"
        )
    needed = -(-size_bytes // MAX_PARTS)
    needed_mib = -(-needed // MIB) * MIB
    return max(preferred_part_bytes, MIN_PART_BYTES, needed_mib)


def part_sizes(size_bytes: int, part_bytes: int) -> list[int]:
    """Sizes of the parts covering size_bytes in order; only the last may be smaller."""
    full, rest = divmod(size_bytes, part_bytes)
    return [part_bytes] * full + ([rest] if rest else [])


class PartSplitter:
    """Cuts a stream of arbitrary chunks into parts of exactly `part_bytes`.

    Once an upload is under way it holds at most one part plus one chunk, which is what lets a
    multi-GB upload stream through the orchestrator without buffering it.
    """

    def __init__(self, part_bytes: int) -> None:
        self.part_bytes = part_bytes
        self._buffer = bytearray()

    def __len__(self) -> int:
        return len(self._buffer)

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk

    def full_parts(self) -> list[bytes]:
        """Removes and returns every complete part buffered so far."""
        count = len(self._buffer) // self.part_bytes
        parts = [
            bytes(self._buffer[i * self.part_bytes : (i + 1) * self.part_bytes])
            for i in range(count)
        ]
        del self._buffer[: count * self.part_bytes]
        return parts

    def rest(self) -> bytes:
        """Removes and returns whatever is buffered (the last, possibly short, part)."""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


class MultipartUploads:
    """The multipart calls on one bucket, with S3 errors turned into the store's exceptions.

    `presigner` may be a second client whose endpoint is the one uploaders can reach.
    """

    def __init__(
        self, client: Any, presigner: Any, bucket: str, where: str, expiry_seconds: int
    ) -> None:
        self.client = client
        self.presigner = presigner
        self.bucket = bucket
        self.where = where
        self.expiry_seconds = expiry_seconds

    def create(self, object_key: str, content_type: str) -> str:
        try:
            response = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=object_key, ContentType=content_type
            )
        except (ClientError, BotoCoreError) as exc:
            raise store_failure("multipart start", object_key, self.where, exc) from exc
        return str(response["UploadId"])

    def upload_part(self, object_key: str, upload_id: str, number: int, data: bytes) -> str:
        """Sends one part; returns its ETag for `complete`."""
        try:
            response = self.client.upload_part(
                Bucket=self.bucket, Key=object_key, UploadId=upload_id, PartNumber=number, Body=data
            )
        except (ClientError, BotoCoreError) as exc:
            raise store_failure(f"part {number} upload", object_key, self.where, exc) from exc
        return str(response["ETag"])

    def plan(
        self, object_key: str, size_bytes: int, part_bytes: int, content_type: str
    ) -> MultipartPlan:
        """Starts an upload and presigns every part with its exact Content-Length, so the parts
        cannot add up to anything but `size_bytes`: the size limit holds without trusting the
        uploader."""
        part_bytes = part_size_for(size_bytes, part_bytes)
        upload_id = self.create(object_key, content_type)
        parts = tuple(
            PresignedPart(
                part_number=number,
                size_bytes=length,
                url=str(
                    self.presigner.generate_presigned_url(
                        "upload_part",
                        Params={
                            "Bucket": self.bucket,
                            "Key": object_key,
                            "UploadId": upload_id,
                            "PartNumber": number,
                            "ContentLength": length,
                        },
                        ExpiresIn=self.expiry_seconds,
                    )
                ),
            )
            for number, length in enumerate(part_sizes(size_bytes, part_bytes), start=1)
        )
        return MultipartPlan(upload_id=upload_id, part_size=part_bytes, parts=parts)

    def complete(self, object_key: str, upload_id: str, parts: list[tuple[int, str]]) -> None:
        ordered = sorted(parts)
        numbers = [number for number, _ in ordered]
        if not numbers or len(set(numbers)) != len(numbers) or not 1 <= numbers[0] <= MAX_PARTS:
            raise ArtifactUploadRejected(
                f"parts {numbers} for {object_key!r} must be distinct numbers within "
                f"1..{MAX_PARTS}; report every uploaded part once"
            )
        etags = [(n, etag if etag.startswith('"') else f'"{etag}"') for n, etag in ordered]
        try:
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=object_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in etags]},
            )
        except ClientError as exc:
            if error_code(exc) in _REJECTED_PARTS:
                raise ArtifactUploadRejected(
                    f"S3 refused to assemble upload {upload_id!r} of {object_key!r}: {exc}; "
                    "upload every part to its URL, then report each part's ETag response header"
                ) from exc
            raise store_failure("multipart completion", object_key, self.where, exc) from exc
        except BotoCoreError as exc:
            raise store_failure("multipart completion", object_key, self.where, exc) from exc

    def abort(self, object_key: str, upload_id: str) -> None:
        """Drops the upload's parts; an upload already gone counts as aborted."""
        try:
            self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=object_key, UploadId=upload_id
            )
        except ClientError as exc:
            if error_code(exc) != "NoSuchUpload":
                raise store_failure("multipart abort", object_key, self.where, exc) from exc
        except BotoCoreError as exc:
            raise store_failure("multipart abort", object_key, self.where, exc) from exc
