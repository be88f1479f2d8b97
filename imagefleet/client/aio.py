"""The asyncio client: the same operations as the sync client (sync.py), for asyncio code."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from imagefleet.api_views import InputView, JobPage, JobView, ModelView
from imagefleet.client.retry import RetryPolicy, retry_delay
from imagefleet.client.sse import aparse_events
from imagefleet.client.sync import (
    RECONNECT_SECONDS,
    STREAM_TIMEOUT,
    JobStillRunning,
    _raise_for,
)
from imagefleet.events_protocol import JobEvent
from imagefleet.protocol import JobStatus


class AsyncImageFleetClient:
    def __init__(
        self,
        base_url: str,
        key: str,
        timeout: float = 30.0,
        *,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self.http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {key}"},
            timeout=timeout,
            transport=transport,
        )

    async def __aenter__(self) -> AsyncImageFleetClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.http.aclose()

    async def submit(
        self, kind: str, params: Any, *, idempotency_key: str | None = None, **options: Any
    ) -> JobView:
        """As `ImageFleetClient.submit`: any kind, retried safely under an Idempotency-Key."""
        body = params.model_dump(exclude_none=True) if hasattr(params, "model_dump") else params
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        return JobView.model_validate(
            await self._json(
                "POST", "/v1/jobs", json={"kind": kind, "params": body, **options}, headers=headers
            )
        )

    async def upload_input(self, data: bytes, content_type: str = "image/png") -> InputView:
        return InputView.model_validate(
            await self._json(
                "POST", "/v1/inputs", content=data, headers={"Content-Type": content_type}
            )
        )

    async def get(self, job_id: str) -> JobView:
        return JobView.model_validate(await self._json("GET", f"/v1/jobs/{job_id}"))

    async def list_jobs(
        self, status: JobStatus | None = None, cursor: str | None = None, limit: int = 50
    ) -> JobPage:
        query: dict[str, Any] = {"limit": limit}
        if status:
            query["status"] = status.value
        if cursor:
            query["cursor"] = cursor
        return JobPage.model_validate(await self._json("GET", "/v1/jobs", params=query))

    async def cancel(self, job_id: str) -> JobView:
        return JobView.model_validate(await self._json("POST", f"/v1/jobs/{job_id}/cancel"))

    async def models(self) -> list[ModelView]:
        return [ModelView.model_validate(m) for m in await self._json("GET", "/v1/models")]

    async def download(self, job_id: str, index: int) -> bytes:
        response = await self._send("GET", f"/v1/jobs/{job_id}/outputs/{index}")
        _raise_for(response)
        return response.content

    async def stream(self, job_id: str, *, after: int | None = None) -> AsyncIterator[JobEvent]:
        """The job's events until its final one, resuming with Last-Event-ID after a drop."""
        async for event in self._follow(f"/v1/jobs/{job_id}/events", after):
            yield event
            if event.event.is_final:
                return

    async def events(self, *, after: int | None = None) -> AsyncIterator[JobEvent]:
        """Every event of this key's jobs (endless)."""
        async for event in self._follow("/v1/events", after):
            yield event

    async def wait(
        self,
        job_id: str,
        *,
        timeout: float = 600.0,
        on_event: Callable[[JobEvent], None] | None = None,
    ) -> JobView:
        """The final job, followed through its event stream; JobStillRunning after `timeout`."""

        async def follow() -> JobView:
            async for event in self.stream(job_id):
                if on_event:
                    on_event(event)
                if event.job is not None and event.event.is_final:
                    return event.job
            return await self.get(job_id)

        try:
            return await asyncio.wait_for(follow(), timeout)
        except TimeoutError:
            raise JobStillRunning(await self.get(job_id), timeout) from None

    async def _follow(self, path: str, after: int | None) -> AsyncIterator[JobEvent]:
        last = after
        while True:
            headers = {"Last-Event-ID": str(last)} if last is not None else {}
            try:
                async with self.http.stream(
                    "GET", path, headers=headers, timeout=STREAM_TIMEOUT
                ) as response:
                    if not response.is_success:
                        await response.aread()
                        _raise_for(response)
                    async for raw in aparse_events(response.aiter_lines()):
                        event = JobEvent.model_validate(json.loads(raw.data))
                        last = event.id or last
                        yield event
            except httpx.TransportError:
                await asyncio.sleep(RECONNECT_SECONDS)

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        retries = 0
        while True:
            response = await self.http.request(method, path, **kwargs)
            delay = retry_delay(
                self.retry, response.status_code, response.headers.get("Retry-After"), retries
            )
            if delay is None:
                return response
            await asyncio.sleep(delay)
            retries += 1

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._send(method, path, **kwargs)
        _raise_for(response)
        return response.json()
