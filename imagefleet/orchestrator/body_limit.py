"""The JSON body size limit: bodies over `max_body_bytes` are answered 413 before any route
parses them, whether the client declared their length or streamed them chunked.

A declared Content-Length over the limit is refused at once. Otherwise the body is read here,
up to the limit, and handed on whole: JSON routes read the whole body into memory anyway, so
this costs no extra memory, and it means the refusal happens before FastAPI's body parsing,
which would turn any error raised while reading into 400 "There was an error parsing the body".
Upload routes (PUT, and the paths given as `exempt_paths`, such as POST /v1/inputs) are exempt:
they stream to the artifact store under their own, larger limit.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodySizeLimit:
    """ASGI middleware; `exempt_method` requests and `exempt_paths` pass through unread."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        exempt_method: str = "PUT",
        exempt_paths: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt_method = exempt_method
        self.exempt_paths = exempt_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] == self.exempt_method
            or scope["path"] in self.exempt_paths
        ):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        first = await self._read_body(receive)
        if first is None:
            await self._refuse(send)
            return
        await self.app(scope, replaying(first, receive), send)

    async def _read_body(self, receive: Receive) -> Message | None:
        """The body as one message, or None when it passes the limit. A client that goes away
        midway yields its disconnect message, for the app to see as such."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return message
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

    async def _refuse(self, send: Send) -> None:
        response = JSONResponse(
            {
                "detail": f"request body larger than {self.max_bytes} bytes; send a smaller "
                "body (files go through the upload endpoints)"
            },
            status_code=413,
        )
        await response({"type": "http"}, _no_receive, send)


def replaying(first: Message, receive: Receive) -> Receive:
    """`receive` with a message already read given back first: the whole body, then the
    connection's own messages (a disconnect while a long-polling claim waits)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return first

    return replay


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
