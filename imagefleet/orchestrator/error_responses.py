"""How an exception a route raises becomes an HTTP answer: one mapping, used by the app's
exception handlers and by the lean path of the worker protocol (hot_routes.py), so that both
answer an error in the same words."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from imagefleet.artifacts.base import ArtifactStoreError
from imagefleet.errors import ApiError
from imagefleet.store.database import DatabaseUnavailable

log = logging.getLogger("imagefleet.orchestrator")
# What the app maps (besides request validation, which only FastAPI's own parsing raises).
MAPPED_ERRORS: tuple[type[Exception], ...] = (
    ApiError,
    ArtifactStoreError,
    DatabaseUnavailable,
    OperationalError,
)


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: a 422 echoes the offending input, and input with a lone
    surrogate cannot be written as UTF-8 (it would turn a validation error into a 500)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def error_response(exc: Exception) -> JSONResponse | None:
    """The answer to `exc`, or None for an exception that is a bug (a 500 by the server's
    error middleware, logged with its traceback)."""
    if isinstance(exc, ApiError):
        return AsciiJSONResponse(
            {"detail": exc.detail()}, status_code=exc.status, headers=exc.headers
        )
    if isinstance(exc, ArtifactStoreError):
        log.warning("artifact store unavailable: %s", exc)
        return JSONResponse(
            {"detail": "the artifact store is unavailable; retry shortly"},
            status_code=503,
            headers={"Retry-After": "5"},
        )
    if isinstance(exc, DatabaseUnavailable | OperationalError):
        log.warning("database unavailable: %s", exc)
        return JSONResponse(
            {"detail": "the database is unavailable; retry shortly"},
            status_code=503,
            headers={"Retry-After": "2"},
        )
    return None
