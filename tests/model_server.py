"""A local HTTP file server for model-download tests: Range requests, request counting, auth
checks, redirects, and connections cut part-way, so that resuming and "download once" are
tested over a real socket rather than against mocks.

Serves the files of one folder on 127.0.0.1 (a free port). Behaviour per test:
- ``requests``: every GET seen, as (path, lower-cased headers) in arrival order;
- ``require_auth``: path -> Authorization value that must be sent (else 401);
- ``redirects``: path -> absolute URL to answer 302 with;
- ``cut_after``: path -> bytes after which the first full response is cut off;
- ``hold``: an Event each body waits for before being sent (to line up concurrent clients).
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class ModelServer:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.require_auth: dict[str, str] = {}
        self.redirects: dict[str, str] = {}
        self.cut_after: dict[str, int] = {}
        self.hold: threading.Event | None = None
        self.first_request = threading.Event()
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def gets(self, path: str) -> int:
        return sum(1 for seen, _ in self.requests if seen == path)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                with server._lock:
                    server.requests.append((path, {k.lower(): v for k, v in self.headers.items()}))
                server.first_request.set()
                if path in server.redirects:
                    self._answer(302, b"", {"Location": server.redirects[path]})
                    return
                wanted = server.require_auth.get(path)
                if wanted is not None and self.headers.get("Authorization") != wanted:
                    self._answer(401, b"unauthorized")
                    return
                file = server.folder / path.lstrip("/")
                if not file.is_file():
                    self._answer(404, b"not found")
                    return
                data = file.read_bytes()
                etag = f'"{len(data)}-{int(file.stat().st_mtime_ns)}"'
                if server.hold is not None:
                    server.hold.wait(timeout=30)
                start = _range_start(self.headers.get("Range"))
                if start is not None and self.headers.get("If-Range") in (None, etag):
                    if start >= len(data):
                        self._answer(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                        return
                    headers = {
                        "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}",
                        "ETag": etag,
                    }
                    self._answer(206, data[start:], headers)
                    return
                cut = server.cut_after.pop(path, None)
                if cut is not None:
                    self._cut(data, cut, etag)
                    return
                self._answer(200, data, {"ETag": etag})

            def _answer(
                self, status: int, body: bytes, headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _cut(self, data: bytes, cut: int, etag: str) -> None:
                """Promises the whole file, sends `cut` bytes, and drops the connection."""
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("ETag", etag)
                self.end_headers()
                self.wfile.write(data[:cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)

        return Handler


def _range_start(value: str | None) -> int | None:
    if not value or not value.startswith("bytes=") or not value.endswith("-"):
        return None
    start = value[len("bytes=") : -1]
    return int(start) if start.isdigit() else None


@contextmanager
def serving(folder: Path) -> Iterator[ModelServer]:
    server = ModelServer(folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()
