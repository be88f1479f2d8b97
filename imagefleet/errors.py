"""Errors that reach an API caller. Each carries its HTTP status, so one handler in the app maps
them all, and the code that raises them (transitions, job kinds, services) needs no FastAPI.

Messages say what happened, what was expected and what to do next; they are shown as they are.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error with an HTTP status and a message for the caller."""

    status = 400

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    def detail(self) -> Any:
        """The `detail` member of the JSON error body."""
        return self.message


class InvalidField(ApiError):
    """422: a request field is outside what this server accepts (`loc` names the field)."""

    status = 422

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc

    def detail(self) -> Any:
        return [{"loc": list(self.loc), "msg": self.message, "type": "value_error"}]


class Unauthorized(ApiError):
    """401: no key, or one that is unknown or revoked."""

    status = 401

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ApiError):
    """403: a valid key whose scope may not call this endpoint."""

    status = 403


class NotFound(ApiError):
    """404: no such thing, or it belongs to someone else (the two are not told apart)."""

    status = 404


class StaleAttempt(ApiError):
    """409: the attempt no longer owns its job (lease lost, job cancelled or finished)."""

    status = 409


class Conflict(ApiError):
    """409: the request contradicts the current state."""

    status = 409


class QuotaExceeded(ApiError):
    """429: a per-key limit was reached; `retry_after` says when trying again makes sense."""

    status = 429

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, round(retry_after)))})
        self.retry_after = retry_after


class PayloadTooLarge(ApiError):
    """413: the body or file is over a configured limit."""

    status = 413


class UnsupportedMediaType(ApiError):
    """415: the body's content type is not one this endpoint takes."""

    status = 415


class BadRequest(ApiError):
    """400: the request cannot be served as sent (the message says how to send it instead)."""

    status = 400


class JobStillRunning(ApiError):
    """504: a synchronous (compatibility) endpoint stopped waiting; the job goes on, and its
    id says where to poll."""

    status = 504

    def __init__(self, job_ids: list[str], waited: float) -> None:
        shown = ", ".join(job_ids)
        super().__init__(
            f"job {shown} did not finish within {waited:g}s; it goes on: poll "
            f"GET /v1/jobs/{job_ids[0]} (or stream /v1/jobs/{job_ids[0]}/events)",
            headers={"Location": f"/v1/jobs/{job_ids[0]}", "X-Imagefleet-Job-Id": shown},
        )
        self.job_ids = job_ids


class JobDidNotSucceed(ApiError):
    """502: the job behind a synchronous endpoint failed or was cancelled."""

    status = 502

    def __init__(self, job_id: str, status: str, reason: str) -> None:
        super().__init__(
            f"job {job_id} {status}: {reason}",
            headers={"Location": f"/v1/jobs/{job_id}", "X-Imagefleet-Job-Id": job_id},
        )
        self.job_id = job_id
