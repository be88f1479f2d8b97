"""Blocking calls (a transaction, a file, an S3 request) made from the event loop, on the
orchestrator's request threads.

Starlette's `run_in_threadpool` hands each call to anyio's worker threads: a capacity limiter
token, a cancel scope and a condition-variable queue per call, about 105 µs of CPU per call with
16 calls in flight here, where `loop.run_in_executor` on a `ThreadPoolExecutor` (a C queue)
takes about 45 µs (a micro-benchmark of an empty call; bench/hot_routes.py measures both on the
lean path). A lifecycle makes four to six such calls, and a py-spy profile of a busy server put
5-9% of its samples in the hand-off (docs/benchmarks.md). So imagefleet's own blocking calls go
through `run_blocking`; only FastAPI's plain `def` routes and dependencies still use anyio's
threads.

The two pools share the process's database connections (`split_threads`), so that no thread
waits for a connection. A call keeps anyio's semantics: it runs in a copy of the caller's
context, and a caller cancelled meanwhile (a client that went away) waits for the call to end
before it is cancelled, so a transaction is never abandoned half-way by its request."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_THREADS = 16
_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_threads = DEFAULT_THREADS


def split_threads(connections: int) -> tuple[int, int]:
    """How many of a process's request threads (as many as its database connections) run
    imagefleet's own calls, and how many FastAPI's plain `def` routes: one in four for those
    (job reads, the dashboard's pages: one short read each), at least one each."""
    framework = max(1, connections // 4)
    return max(1, connections - framework), framework


def configure(threads: int) -> None:
    """Sizes the pool `run_blocking` uses (at an app's start). A pool of another size is
    replaced; calls it is running finish on it."""
    global _executor, _threads
    with _lock:
        if threads == _threads and _executor is not None:
            return
        old, _executor, _threads = _executor, None, threads
    if old is not None:
        old.shutdown(wait=False)


def _pool() -> ThreadPoolExecutor:
    global _executor
    executor = _executor
    if executor is not None:  # every call but the first: no lock
        return executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(_threads, thread_name_prefix="imagefleet-request")
        return _executor


async def run_blocking(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`function(*args, **kwargs)` on a request thread, awaited."""
    call = functools.partial(contextvars.copy_context().run, function, *args, **kwargs)
    future = asyncio.get_running_loop().run_in_executor(_pool(), call)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        raise
