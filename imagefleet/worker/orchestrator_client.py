"""The worker's side of the worker protocol: plain HTTP calls, retried across network cuts.

The worker only ever calls out, so it runs behind NAT. Calls that change state are safe to
retry: claim hands out a new lease only for a queued job, heartbeat renews, complete is
idempotent for the same attempt and refused (409) for a stale one.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import TypeVar

import httpx

from imagefleet.checkpoint_protocol import CheckpointUploadTarget, StoredCheckpoint
from imagefleet.training_protocol import CheckpointReceipt, ResumeReport
from imagefleet.worker_protocol import (
    AttemptHeartbeat,
    AttemptHeartbeatResult,
    AttemptResult,
    BatchHeartbeatRequest,
    BatchHeartbeatResponse,
    ClaimRequest,
    ClaimResponse,
    CompleteRequest,
    FailRequest,
    HeartbeatRequest,
    HeartbeatResponse,
    InlineCompleteRequest,
    MultipartStart,
    MultipartUpload,
    UploadedArtifact,
)

log = logging.getLogger("imagefleet.worker.client")
T = TypeVar("T")


class LeaseLost(RuntimeError):
    """409: this attempt no longer owns its job; drop the work without reporting a result."""


class Unauthorized(RuntimeError):
    """401/403: the worker key is wrong, revoked or not a worker key; retrying will not help."""


class OrchestratorClient:
    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        retry_for_seconds: float = 120.0,
        should_give_up: Callable[[], bool] = lambda: False,
    ) -> None:
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(30.0, read=330.0),
        )
        # Presigned URLs go to the storage service: never send it our bearer key.
        self.storage = httpx.Client(timeout=httpx.Timeout(30.0, write=300.0))
        self.retry_for_seconds = retry_for_seconds
        self.should_give_up = should_give_up
        # Whether the orchestrator answers a claim sent with a completion (`next`); an older
        # one refuses the field (422), and is then sent completions without it.
        self.follows_completions = True

    def close(self) -> None:
        self.http.close()
        self.storage.close()

    def claim(self, request: ClaimRequest) -> ClaimResponse:
        response = self._call(lambda: self.http.post("/v1/worker/claim", json=request.model_dump()))
        return ClaimResponse.model_validate(response.json())

    def heartbeat(
        self,
        attempt_id: str,
        step: int,
        total: int,
        loss: float | None = None,
        learning_rate: float | None = None,
    ) -> HeartbeatResponse:
        """One try: the heartbeat loop beats again soon anyway, and a long backoff here would
        let the lease run out after a short orchestrator restart."""
        body = HeartbeatRequest(
            step=step, total_steps=total, loss=loss, learning_rate=learning_rate
        ).model_dump(exclude_none=True)
        response = self._call(
            lambda: self.http.post(f"/v1/worker/attempts/{attempt_id}/heartbeat", json=body),
            retry_for_seconds=0.0,
        )
        return HeartbeatResponse.model_validate(response.json())

    def heartbeat_many(self, beats: list[AttemptHeartbeat]) -> list[AttemptHeartbeatResult]:
        """The leases of several attempts (a micro-batch) renewed in one call; one try, as
        `heartbeat`. Each attempt answers for itself."""
        body = BatchHeartbeatRequest(attempts=beats).model_dump()
        response = self._call(
            lambda: self.http.post("/v1/worker/heartbeats", json=body), retry_for_seconds=0.0
        )
        return BatchHeartbeatResponse.model_validate(response.json()).results

    def complete_inline(self, attempt_id: str, request: InlineCompleteRequest) -> AttemptResult:
        """Upload-and-complete in one call for outputs small enough for a JSON body."""
        return self._completed(f"/v1/worker/attempts/{attempt_id}/complete-inline", request)

    def _completed(
        self, path: str, request: CompleteRequest | InlineCompleteRequest
    ) -> AttemptResult:
        """A completion; one whose `next` claim the orchestrator does not know (422 naming the
        field: a version from before it) is sent again without it, and so are the later ones."""
        body = request.model_dump(mode="json", exclude={"next"} if request.next is None else None)
        try:
            response = self._call(lambda: self.http.post(path, json=body))
        except RuntimeError as exc:
            if request.next is None or not _refuses_next(exc):
                raise
            log.warning("the orchestrator does not answer claims sent with completions: %s", exc)
            self.follows_completions = False
            return self._completed(path, request.model_copy(update={"next": None}))
        return AttemptResult.model_validate(response.json())

    def upload(
        self, attempt_id: str, index: int, data: bytes, content_type: str = "image/png"
    ) -> UploadedArtifact:
        response = self._call(
            lambda: self.http.put(
                f"/v1/worker/attempts/{attempt_id}/outputs/{index}",
                content=data,
                headers={"Content-Type": content_type},
            )
        )
        return UploadedArtifact.model_validate(response.json())

    def put_preview(self, attempt_id: str, step: int, total: int, jpeg: bytes) -> None:
        """A low-resolution preview (worker/preview.py): one try, no retry, a short timeout;
        a preview that does not arrive is simply not shown."""
        self.http.put(
            f"/v1/worker/attempts/{attempt_id}/preview",
            params={"step": step, "total_steps": total},
            content=jpeg,
            headers={"Content-Type": "image/jpeg"},
            timeout=5.0,
        ).raise_for_status()

    def put_direct(self, url: str, data: bytes, content_type: str) -> None:
        """Uploads straight to the artifact store through a presigned URL."""
        self._call(
            lambda: self.storage.put(url, content=data, headers={"Content-Type": content_type})
        )

    def fetch(self, url: str) -> bytes:
        """An input file: through the API when `url` is relative (with the worker key), else
        from the store's presigned URL (without it)."""
        if url.startswith("/"):
            return self._call(lambda: self.http.get(url)).content
        return self._call(lambda: self.storage.get(url)).content

    def upload_multipart(
        self, attempt_id: str, index: int, data: bytes, content_type: str = "image/png"
    ) -> UploadedArtifact:
        """Uploads a big file to the store in parts through presigned part URLs."""
        prefix = f"/v1/worker/attempts/{attempt_id}/outputs/{index}/multipart"
        body = MultipartStart(size_bytes=len(data), content_type=content_type).model_dump()
        plan = MultipartUpload.model_validate(
            self._call(lambda: self.http.post(prefix, json=body)).json()
        )
        finished = []
        offset = 0
        for part in plan.parts:
            chunk = data[offset : offset + part.size_bytes]
            offset += part.size_bytes
            response = self._call(functools.partial(self.storage.put, part.url, content=chunk))
            finished.append({"part_number": part.part_number, "etag": response.headers["ETag"]})
        done = {"upload_id": plan.upload_id, "parts": finished}
        response = self._call(lambda: self.http.post(f"{prefix}/complete", json=done))
        return UploadedArtifact.model_validate(response.json())

    def upload_checkpoint(self, attempt_id: str, step: int, data: bytes) -> CheckpointReceipt:
        """The `checkpoint` transition: the archive goes through the API, which records it."""
        response = self._call(
            lambda: self.http.put(
                f"/v1/worker/attempts/{attempt_id}/checkpoints/{step}",
                content=data,
                headers={"Content-Type": "application/zip"},
            )
        )
        return CheckpointReceipt.model_validate(response.json())

    def checkpoint_target(self, attempt_id: str, step: int) -> CheckpointUploadTarget:
        """Where to put the checkpoint at ``step``: a presigned URL, or null (use the API)."""
        response = self._call(
            lambda: self.http.post(f"/v1/worker/attempts/{attempt_id}/checkpoints/{step}/direct")
        )
        return CheckpointUploadTarget.model_validate(response.json())

    def report_stored_checkpoint(
        self, attempt_id: str, step: int, stored: StoredCheckpoint
    ) -> CheckpointReceipt:
        """The `checkpoint` transition for an archive put through its presigned URL."""
        body = stored.model_dump()
        response = self._call(
            lambda: self.http.post(
                f"/v1/worker/attempts/{attempt_id}/checkpoints/{step}/stored", json=body
            )
        )
        return CheckpointReceipt.model_validate(response.json())

    def report_resume(self, attempt_id: str, report: ResumeReport) -> None:
        body = report.model_dump()
        self._call(lambda: self.http.post(f"/v1/worker/attempts/{attempt_id}/resume", json=body))

    def complete(self, attempt_id: str, request: CompleteRequest) -> AttemptResult:
        return self._completed(f"/v1/worker/attempts/{attempt_id}/complete", request)

    def fail(self, attempt_id: str, request: FailRequest) -> AttemptResult:
        body = request.model_dump()
        response = self._call(
            lambda: self.http.post(f"/v1/worker/attempts/{attempt_id}/fail", json=body)
        )
        return AttemptResult.model_validate(response.json())

    def _call(
        self, send: Callable[[], httpx.Response], retry_for_seconds: float | None = None
    ) -> httpx.Response:
        """Sends, retrying transport errors and 502/503/504 with backoff for a bounded time."""
        window = self.retry_for_seconds if retry_for_seconds is None else retry_for_seconds
        deadline = time.monotonic() + window
        delay = 0.5
        while True:
            try:
                response = send()
                if response.status_code not in (502, 503, 504):
                    return _checked(response)
                problem = f"HTTP {response.status_code}"
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if time.monotonic() + delay > deadline or self.should_give_up():
                raise ConnectionError(f"orchestrator unreachable ({problem})")
            log.warning("orchestrator call failed (%s); retrying in %.1fs", problem, delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def _checked(response: httpx.Response) -> httpx.Response:
    if response.status_code == 409:
        raise LeaseLost(_detail(response))
    if response.status_code in (401, 403):
        raise Unauthorized(f"orchestrator refused the worker key: {_detail(response)}")
    if response.is_error:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code}: {_detail(response)}"
        )
    return response


def _refuses_next(exc: RuntimeError) -> bool:
    """Whether a completion's error is an older orchestrator's 422 for the unknown `next`."""
    text = str(exc)
    return " answered 422: " in text and "'next'" in text and "extra" in text


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text
