"""An ASGI app served by a real uvicorn server in a thread of the test process, for tests of
behaviour that only a real HTTP connection shows (chunked bodies, disconnects)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

START_TIMEOUT_SECONDS = 30.0


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serves `app` on a free loopback port (with its lifespan) and yields its base URL; the
    server is stopped, and its thread joined, on exit."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="uvicorn-test-server", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        # uvicorn offers no event for "listening"; its flag is set once the socket is bound.
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start (see the log above)")
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=START_TIMEOUT_SECONDS)
