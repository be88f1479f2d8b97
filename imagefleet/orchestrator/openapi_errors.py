"""Documents every error status a route can answer, so the OpenAPI document is the whole truth.

Routers use `DocumentedRoute` as their route class; it adds the statuses that follow from what a
route is, by rules that match how the app answers:
- every authenticated route: 401 (no, bad or revoked key), 403 (wrong scope), 503 (database or
  artifact store unavailable, with Retry-After); client routes also 429 (rate limit);
- a route that takes a body (POST, PUT): 400 (not JSON, not UTF-8), 413 (over the size limit);
- a route with an id in its path: 404 (unknown, or another tenant's);
- a worker attempt route: 409 (the attempt no longer owns its job).
422 is documented by FastAPI itself for routes with parameters; routes add their own specific
statuses (415 for uploads, 429 for queue limits, 422 where no parameter explains it) with
`responses=`, which are kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fastapi.routing import APIRoute
from pydantic import BaseModel


class ErrorBody(BaseModel):
    """Every error's body: a message, or for 422 a list of {loc, msg, type} per bad field."""

    detail: str | list[dict[str, Any]]


DESCRIPTIONS = {
    400: "The body is not valid JSON",
    401: "Missing, unknown or revoked API key",
    403: "This key's scope may not call this endpoint",
    404: "No such thing, or it belongs to another tenant",
    409: "The attempt no longer owns its job (lease lost, cancelled or finished)",
    413: "The body is over the size limit",
    415: "The body's content type is not accepted here",
    422: "A field is invalid; `detail` names it",
    429: "Rate limit or queue limit reached; see Retry-After",
    503: "The database or artifact store is unavailable; retry after Retry-After",
}


def statuses_for(path: str, methods: Sequence[str]) -> set[int]:
    if not path.startswith("/v1/"):
        return set()
    found = {401, 403, 503}
    if not path.startswith(("/v1/worker/", "/v1/admin/")):
        found.add(429)
    if {"POST", "PUT"} & {m.upper() for m in methods}:
        found |= {400, 413}
    if "{" in path:
        found.add(404)
    if path.startswith("/v1/worker/attempts/"):
        found.add(409)
    return found


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for these statuses, with the error body's schema."""
    return {
        status: {"description": DESCRIPTIONS[status], "model": ErrorBody} for status in statuses
    }


class DocumentedRoute(APIRoute):
    """An APIRoute whose `responses` include the error statuses the rules above give it."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        responses = dict(kwargs.get("responses") or {})
        for status, entry in error_responses(
            *statuses_for(path, kwargs.get("methods") or [])
        ).items():
            responses.setdefault(status, entry)
        kwargs["responses"] = responses
        super().__init__(path, endpoint, **kwargs)
