"""A small typed Python client for the client API (used by the CLI, the tests and benchmarks)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from imagefleet.kinds.txt2img import Txt2ImgParams
from imagefleet.protocol import (
    AccountView,
    AttemptView,
    InputView,
    JobPage,
    JobStatus,
    JobView,
    ModelView,
    WebhookDeliveryView,
)
from imagefleet.webhook_signing import verify_webhook

__all__ = ["ApiError", "ImageFleetClient", "JobStillRunning", "verify_webhook"]


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
    def __init__(self, base_url: str, key: str, timeout: float = 30.0) -> None:
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {key}"},
            timeout=timeout,
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
        options = {"allow_same_node_retry": True} if allow_same_node_retry else {}
        return self.submit("txt2img", params, **options)

    def submit(self, kind: str, params: Any, **options: Any) -> JobView:
        """Submits a job of any kind; `params` is its params model or a dict; `options` are
        the other body fields (webhook, allow_same_node_retry)."""
        body = params.model_dump(exclude_none=True) if hasattr(params, "model_dump") else params
        return JobView.model_validate(
            self._json("POST", "/v1/jobs", json={"kind": kind, "params": body, **options})
        )

    def upload_input(self, data: bytes, content_type: str = "image/png") -> InputView:
        """Uploads an init image or mask; pass the returned id in a job's params."""
        return InputView.model_validate(
            self._json("POST", "/v1/inputs", content=data, headers={"Content-Type": content_type})
        )

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

    def download(self, job_id: str, index: int) -> bytes:
        response = self.http.get(f"/v1/jobs/{job_id}/outputs/{index}")
        _raise_for(response)
        return response.content

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

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        _raise_for(response)
        return response.json()


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    raise ApiError(response.status_code, detail)
