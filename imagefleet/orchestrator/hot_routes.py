"""A lean path for the calls a fleet makes all day: the submit, and the worker protocol's
claim, heartbeat, complete and fail.

Profiling a server under load (docs/benchmarks.md) put half of its CPU outside the route
handlers, most of it in the layers every FastAPI request crosses: six middlewares, matching
the path against the routes in turn, solving each dependency, validating the answer again
before writing it. For a heartbeat whose handler does nothing, that stack costs about 1 ms of
CPU here, this path about a third of it (bench/hot_routes.py). This middleware answers those
calls directly: it matches the exact path, authenticates with the same `check_key`, validates
the body with the route's own model, calls the route's own function and words errors with
the app's own mapping (error_responses.py).

It answers only requests it can take whole. Anything else goes on to FastAPI, which answers
as it always did: a body that is not JSON or fails validation (FastAPI words the 422), no
Bearer header (a dashboard cookie, or the 401), a non-JSON content type, a root path. So each
route keeps a single definition (routes_worker.py, routes_submit.py), its OpenAPI entry
included, and a test compares the two paths answer by answer (test_hot_routes.py).
`IMAGEFLEET_HOT_ROUTES=false` turns it off."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagefleet.blocking import run_blocking
from imagefleet.orchestrator import routes_submit, routes_worker
from imagefleet.orchestrator.auth import check_key
from imagefleet.orchestrator.body_limit import replaying
from imagefleet.orchestrator.error_responses import AsciiJSONResponse, error_response
from imagefleet.orchestrator.lifecycle import JobLifecycle
from imagefleet.orchestrator.work_signal import WorkSignal
from imagefleet.store.keys import ApiKey
from imagefleet.worker_protocol import (
    BatchHeartbeatRequest,
    ClaimRequest,
    CompleteRequest,
    FailRequest,
    HeartbeatRequest,
    InlineCompleteRequest,
)


@dataclass(frozen=True)
class Call:
    """What a hot route's function is called with."""

    request: Request
    key: ApiKey
    body: Any
    attempt_id: str
    idempotency_key: str | None
    # Where a route sets its status and extra headers (FastAPI's `response: Response`).
    response: Response

    @property
    def lifecycle(self) -> JobLifecycle:
        lifecycle: JobLifecycle = self.request.app.state.lifecycle
        return lifecycle

    @property
    def signal(self) -> WorkSignal:
        signal: WorkSignal = self.request.app.state.work_signal
        return signal


@dataclass(frozen=True)
class HotRoute:
    path: re.Pattern[str]
    parse: Callable[[Any], Any]  # the body's model, in Python mode (raises ValidationError)
    answer: Callable[[Call], Awaitable[BaseModel]]
    audience: str
    status: int


def _route(
    template: str,
    body: type[BaseModel] | TypeAdapter[Any],
    answer: Callable[[Call], Awaitable[BaseModel]],
    audience: str = "worker",
    status: int = 200,
) -> HotRoute:
    pattern = re.escape(template).replace(r"\{attempt_id\}", "(?P<attempt_id>[^/]+)")
    parse = body.validate_python if isinstance(body, TypeAdapter) else body.model_validate
    return HotRoute(re.compile(pattern + r"\Z"), parse, answer, audience, status)


def _in_thread(function: Callable[..., BaseModel], *args: Any) -> Awaitable[BaseModel]:
    """A plain `def` route runs in the thread pool, as FastAPI would run it."""
    return run_blocking(function, *args)


_WORKER = "/v1/worker"
_JSON = b"application/json"
IDEMPOTENCY_KEY_MAX = 200  # as routes_submit.IdempotencyKey declares it


def hot_routes(job_type: Any) -> tuple[HotRoute, ...]:
    """The submit (for the union of registered kinds) and the worker protocol's busy calls."""
    return (
        _route(
            "/v1/jobs",
            TypeAdapter(job_type),
            lambda c: routes_submit.submit(c.request, c.response, c.key, c.body, c.idempotency_key),
            audience="client",
            status=201,
        ),
        _route(
            f"{_WORKER}/claim",
            ClaimRequest,
            lambda c: routes_worker.claim(c.request, c.key, c.body, c.lifecycle, c.signal),
        ),
        _route(
            f"{_WORKER}/attempts/{{attempt_id}}/heartbeat",
            HeartbeatRequest,
            lambda c: _in_thread(routes_worker.heartbeat, c.key, c.attempt_id, c.body, c.lifecycle),
        ),
        _route(
            f"{_WORKER}/heartbeats",
            BatchHeartbeatRequest,
            lambda c: _in_thread(routes_worker.heartbeat_many, c.key, c.body, c.lifecycle),
        ),
        _route(
            f"{_WORKER}/attempts/{{attempt_id}}/complete",
            CompleteRequest,
            lambda c: _in_thread(
                routes_worker.complete, c.key, c.attempt_id, c.body, c.lifecycle, c.signal
            ),
        ),
        _route(
            f"{_WORKER}/attempts/{{attempt_id}}/complete-inline",
            InlineCompleteRequest,
            lambda c: routes_worker.complete_inline(
                c.key, c.attempt_id, c.body, c.lifecycle, c.signal
            ),
        ),
        _route(
            f"{_WORKER}/attempts/{{attempt_id}}/fail",
            FailRequest,
            lambda c: routes_worker.fail(c.key, c.attempt_id, c.body, c.lifecycle, c.signal),
        ),
    )


class HotRoutes:
    """ASGI middleware: the hot calls (submit, the worker protocol) answered here, everything
    else passed on."""

    def __init__(self, app: ASGIApp, job_type: Any) -> None:
        self.app = app
        self.routes = hot_routes(job_type)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        taken = _taken(scope, self.routes)
        if taken is None:
            await self.app(scope, receive, send)
            return
        route, attempt_id, token, idempotency_key = taken
        message = await receive()
        body = _parsed(route, message)
        if body is None:  # FastAPI answers, with the body it would have read
            await self.app(scope, replaying(message, receive), send)
            return
        # The body is read: what `receive` yields now is the client's disconnect, which a
        # long-polling claim watches for.
        request = Request(scope, receive)
        sub = Response(status_code=0)  # 0: the route did not set one (FastAPI uses None)
        del sub.headers["content-length"]
        try:
            key = await check_key(request, token, route.audience)
            call = Call(request, key, body, attempt_id, idempotency_key, sub)
            answer = await route.answer(call)
        except Exception as exc:
            response = error_response(exc)
            if response is None:
                raise
        else:
            content = answer.model_dump(mode="json", by_alias=True)
            response = AsciiJSONResponse(content, status_code=sub.status_code or route.status)
            response.headers.raw.extend(sub.headers.raw)
        await response(scope, receive, send)


def _taken(
    scope: Scope, routes: tuple[HotRoute, ...]
) -> tuple[HotRoute, str, str, str | None] | None:
    """The hot route this request is for, its attempt id, Bearer token and Idempotency-Key;
    None for a request FastAPI should see."""
    if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
        return None
    path: str = scope["path"]
    if not path.startswith("/v1/"):
        return None
    for route in routes:
        match = route.path.match(path)
        if match:
            break
    else:
        return None
    headers: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        headers.setdefault(name, value)  # the first of a repeated header, as Starlette reads
    content_type = headers.get(b"content-type")
    if content_type is not None and content_type.split(b";")[0].strip().lower() != _JSON:
        return None
    # As FastAPI's HTTPBearer reads the header (without it, FastAPI tries the cookie).
    scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    idempotency = headers.get(b"idempotency-key")
    if idempotency is not None and len(idempotency) > IDEMPOTENCY_KEY_MAX:
        return None  # FastAPI words the 422
    idempotency_key = idempotency.decode("latin-1") if idempotency is not None else None
    return route, match.groupdict().get("attempt_id", ""), token, idempotency_key


def _parsed(route: HotRoute, message: Message) -> Any:
    """The request's body as the route's model, validated as FastAPI would (decoded JSON,
    then the model in Python mode); None for anything FastAPI should answer itself."""
    if message["type"] != "http.request" or message.get("more_body", False):
        return None
    try:
        return route.parse(json.loads(message.get("body", b"")))
    except (ValueError, ValidationError):  # json.JSONDecodeError and UnicodeDecodeError too
        return None
