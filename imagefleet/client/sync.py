"""The synchronous client (used by the CLI, the tests and benchmarks); aio.py is its async
twin. Both retry 429/503 answers as retry.py decides, submit with an Idempotency-Key so that a
retried submit never queues a second job, and follow jobs through their event streams."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from imagefleet.api_views import (
    AccountView,
    AttemptView,
    InputView,
    JobPage,
    JobView,
    ModelView,
    WebhookDeliveryView,
)
from imagefleet.client.retry import RetryPolicy, retry_delay
from imagefleet.client.sse import parse_events
from imagefleet.events_protocol import JobEvent
from imagefleet.kinds.txt2img import Txt2ImgParams
from imagefleet.protocol import JobStatus
from imagefleet.scaling.wire import (
    DecisionView,
    FleetUsageView,
    KeyUsageView,
    PoolEdit,
    PoolView,
)
from imagefleet.training_protocol import TrainingView
from imagefleet.webhook_signing import verify_webhook

__all__ = ["ApiError", "ImageFleetClient", "JobStillRunning", "verify_webhook"]
# Streams send a keepalive every 15 s: a minute of silence means the connection is dead.
STREAM_TIMEOUT = httpx.Timeout(30.0, read=60.0)
RECONNECT_SECONDS = 1.0


class ApiError(RuntimeError):
    """The API refused a request; `status` is the HTTP status and `detail` its explanation."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class JobStillRunning(TimeoutError):
    """`wait` gave up before the job was final; the job goes on. `job` is the last state seen."""

    def __init__(self, job: JobView, waited: float) -> None:
        super().__init__(f"job {job.id} still {job.status.value} after {waited:.0f}s")
        self.job = job
        self.waited = waited


class ImageFleetClient:
    def __init__(
        self,
        base_url: str,
        key: str,
        timeout: float = 30.0,
        *,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {key}"},
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> ImageFleetClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def submit_txt2img(
        self, params: Txt2ImgParams | dict[str, Any], *, allow_same_node_retry: bool = False
    ) -> JobView:
        """Queues a txt2img job; ``allow_same_node_retry`` lets it retry on a node where it
        failed once it has failed on every live node (a one-machine fleet has only one)."""
        options: dict[str, Any] = {"allow_same_node_retry": True} if allow_same_node_retry else {}
        return self.submit("txt2img", params, **options)

    def submit(
        self, kind: str, params: Any, *, idempotency_key: str | None = None, **options: Any
    ) -> JobView:
        """Submits a job of any kind; `params` is its params model or a dict; `options` are
        the other body fields (webhook, allow_same_node_retry). The Idempotency-Key (random
        unless given) makes the retries of a refused or lost submit return the same job."""
        body = params.model_dump(exclude_none=True) if hasattr(params, "model_dump") else params
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        return JobView.model_validate(
            self._json(
                "POST", "/v1/jobs", json={"kind": kind, "params": body, **options}, headers=headers
            )
        )

    def upload_input(self, data: bytes, content_type: str = "image/png") -> InputView:
        """Uploads an init image or mask; pass the returned id in a job's params."""
        return InputView.model_validate(
            self._json("POST", "/v1/inputs", content=data, headers={"Content-Type": content_type})
        )

    def input_from_output(self, job_id: str, index: int = 0) -> InputView:
        """Makes output `index` of a succeeded job an input (e.g. a preprocess job's edge
        map as a ControlNet's control image); pass the returned id in a job's params."""
        path = f"/v1/jobs/{job_id}/outputs/{index}/input"
        return InputView.model_validate(self._json("POST", path))

    def get(self, job_id: str) -> JobView:
        return JobView.model_validate(self._json("GET", f"/v1/jobs/{job_id}"))

    def list_jobs(
        self, status: JobStatus | None = None, cursor: str | None = None, limit: int = 50
    ) -> JobPage:
        query: dict[str, Any] = {"limit": limit}
        if status:
            query["status"] = status.value
        if cursor:
            query["cursor"] = cursor
        return JobPage.model_validate(self._json("GET", "/v1/jobs", params=query))

    def attempts(self, job_id: str) -> list[AttemptView]:
        """Which workers and nodes tried the job, when, and how each try ended."""
        return [
            AttemptView.model_validate(a) for a in self._json("GET", f"/v1/jobs/{job_id}/attempts")
        ]

    def cancel(self, job_id: str) -> JobView:
        return JobView.model_validate(self._json("POST", f"/v1/jobs/{job_id}/cancel"))

    def account(self) -> AccountView:
        return AccountView.model_validate(self._json("GET", "/v1/account"))

    def webhook_deliveries(self, job_id: str) -> list[WebhookDeliveryView]:
        return [
            WebhookDeliveryView.model_validate(d)
            for d in self._json("GET", f"/v1/jobs/{job_id}/webhooks")
        ]

    def models(self) -> list[ModelView]:
        return [ModelView.model_validate(m) for m in self._json("GET", "/v1/models")]

    def training(self, job_id: str) -> TrainingView:
        """A training job's progress, loss curve, checkpoints, interruptions and cost."""
        return TrainingView.model_validate(self._json("GET", f"/v1/jobs/{job_id}/training"))

    # --- autoscaling and usage (admin key for pools and fleet usage) ---

    def usage(self, days: int = 30) -> KeyUsageView:
        return KeyUsageView.model_validate(self._json("GET", "/v1/usage", params={"days": days}))

    def fleet_usage(self, hours: float = 24.0) -> FleetUsageView:
        return FleetUsageView.model_validate(
            self._json("GET", "/v1/admin/usage", params={"hours": hours})
        )

    def pools(self) -> list[PoolView]:
        return [PoolView.model_validate(p) for p in self._json("GET", "/v1/admin/pools")]

    def pool(self, name: str) -> PoolView:
        return PoolView.model_validate(self._json("GET", f"/v1/admin/pools/{name}"))

    def edit_pool(self, name: str, edit: PoolEdit) -> PoolView:
        body = edit.model_dump(exclude_none=True)
        return PoolView.model_validate(self._json("PATCH", f"/v1/admin/pools/{name}", json=body))

    def reset_pool(self, name: str) -> PoolView:
        return PoolView.model_validate(self._json("POST", f"/v1/admin/pools/{name}/reset"))

    def scaling_decisions(self, pool: str | None = None, limit: int = 20) -> list[DecisionView]:
        params: dict[str, Any] = {"limit": limit}
        if pool:
            params["pool"] = pool
        return [
            DecisionView.model_validate(d)
            for d in self._json("GET", "/v1/admin/scaling/decisions", params=params)
        ]

    def download(self, job_id: str, index: int) -> bytes:
        response = self._send("GET", f"/v1/jobs/{job_id}/outputs/{index}")
        _raise_for(response)
        return response.content

    def stream(
        self, job_id: str, *, after: int | None = None, deadline: float | None = None
    ) -> Iterator[JobEvent]:
        """The job's events as they happen, until its final one. A dropped or timed-out
        connection is reopened with Last-Event-ID, so no event is missed or repeated. With a
        `deadline` (time.monotonic()), StreamDeadline is raised once it passes (checked at
        every line, and the server sends one at least every 15 s)."""
        for event in self._follow(f"/v1/jobs/{job_id}/events", after, deadline):
            yield event
            if event.event.is_final:
                return

    def events(self, *, after: int | None = None) -> Iterator[JobEvent]:
        """Every event of this key's jobs, from `after` (or from now), reconnecting as needed;
        endless: stop iterating when done."""
        yield from self._follow("/v1/events", after)

    def _follow(
        self, path: str, after: int | None, deadline: float | None = None
    ) -> Iterator[JobEvent]:
        last = after
        while True:
            headers = {"Last-Event-ID": str(last)} if last is not None else {}
            try:
                with self.http.stream(
                    "GET", path, headers=headers, timeout=_stream_timeout(deadline)
                ) as r:
                    if not r.is_success:
                        r.read()
                        _raise_for(r)
                    for raw in parse_events(_until(r.iter_lines(), deadline)):
                        event = JobEvent.model_validate(json.loads(raw.data))
                        last = event.id or last
                        yield event
            except httpx.TransportError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise StreamDeadline from None
                time.sleep(RECONNECT_SECONDS)  # the server went away: resume where we were

    def wait(
        self,
        job_id: str,
        *,
        timeout: float = 600.0,
        poll_seconds: float = 0.25,
        on_update: Callable[[JobView], None] | None = None,
    ) -> JobView:
        """Polls until the job is final; calls `on_update` with every state seen. Raises
        JobStillRunning (a TimeoutError) when `timeout` seconds pass first."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if on_update:
                on_update(job)
            if job.status.is_final:
                return job
            if time.monotonic() > deadline:
                raise JobStillRunning(job, timeout)
            time.sleep(poll_seconds)

    def wait_streaming(
        self,
        job_id: str,
        *,
        timeout: float = 600.0,
        on_event: Callable[[JobEvent], None] | None = None,
    ) -> JobView:
        """Follows the job's event stream to its end (no polling) and returns the final job;
        JobStillRunning when `timeout` seconds pass first (checked between events)."""
        try:
            for event in self.stream(job_id, deadline=time.monotonic() + timeout):
                if on_event:
                    on_event(event)
                if event.job is not None and event.event.is_final:
                    return event.job
        except StreamDeadline:
            pass
        raise JobStillRunning(self.get(job_id), timeout)

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request, sent again after 429/503 as the retry policy says."""
        retries = 0
        while True:
            response = self.http.request(method, path, **kwargs)
            delay = retry_delay(
                self.retry, response.status_code, response.headers.get("Retry-After"), retries
            )
            if delay is None:
                return response
            time.sleep(delay)
            retries += 1

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        _raise_for(response)
        return response.json()


class StreamDeadline(TimeoutError):
    """A stream read past its caller's deadline."""


def _stream_timeout(deadline: float | None) -> httpx.Timeout:
    """Reads wait for the next keepalive, or no longer than the caller's deadline."""
    if deadline is None:
        return STREAM_TIMEOUT
    return httpx.Timeout(30.0, read=min(60.0, max(0.05, deadline - time.monotonic())))


def _until(lines: Iterator[str], deadline: float | None) -> Iterator[str]:
    for line in lines:
        if deadline is not None and time.monotonic() > deadline:
            raise StreamDeadline
        yield line


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    raise ApiError(response.status_code, detail)
