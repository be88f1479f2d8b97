"""A real HTTP server on 127.0.0.1 for testing API clients (the autoscaler's providers).

Each test declares the endpoints it implements as (method, path regex) -> handler; the server
records every request (method, path, query, headers, JSON body) and can be told to answer the
next few requests to an endpoint with an error first (401, 429 with Retry-After, 503...), so
the client's error handling runs over a real socket. It stops in the test's teardown.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class Answer:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


Handler = Callable[[Request, re.Match[str]], Answer]


class FakeApi:
    def __init__(self, routes: dict[tuple[str, str], Handler]) -> None:
        self.routes = [(method, re.compile(f"^{path}$"), h) for (method, path), h in routes.items()]
        self.requests: list[Request] = []
        self._failures: list[tuple[str, re.Pattern[str], Answer]] = []
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def fail_next(self, method: str, path: str, answer: Answer, times: int = 1) -> None:
        """The next `times` requests matching method and path get `answer` instead."""
        with self._lock:
            self._failures.extend([(method, re.compile(f"^{path}$"), answer)] * times)

    def calls(self, method: str, path: str) -> list[Request]:
        pattern = re.compile(f"^{path}$")
        return [r for r in self.requests if r.method == method and pattern.match(r.path)]

    def _answer(self, request: Request) -> Answer:
        with self._lock:
            self.requests.append(request)
            for i, (method, pattern, answer) in enumerate(self._failures):
                if method == request.method and pattern.match(request.path):
                    del self._failures[i]
                    return answer
        for method, pattern, handler in self.routes:
            match = pattern.match(request.path)
            if method == request.method and match:
                return handler(request, match)
        return Answer(404, {"message": f"no route {request.method} {request.path}"})

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class _Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                url = urlsplit(self.path)
                request = Request(
                    method=self.command,
                    path=url.path,
                    query=parse_qs(url.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=json.loads(raw) if raw else None,
                )
                answer = api._answer(request)
                payload = b"" if answer.body is None else json.dumps(answer.body).encode()
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(payload)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return _Handler


@contextmanager
def running(api: FakeApi) -> Iterator[FakeApi]:
    thread = threading.Thread(target=api.server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield api
    finally:
        api.server.shutdown()
        api.server.server_close()
        thread.join()
