"""imagefleet.blocking: the request threads' hand-off keeps anyio's semantics (context, errors,
cancellation), and the threads are split between imagefleet's calls and FastAPI's."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import pytest

from imagefleet import blocking

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


def test_a_call_runs_on_another_thread_in_the_callers_context() -> None:
    async def main() -> tuple[str, str]:
        REQUEST_ID.set("r1")
        return await blocking.run_blocking(
            lambda: (REQUEST_ID.get(), threading.current_thread().name)
        )

    request_id, thread = asyncio.run(main())
    assert request_id == "r1"
    assert thread.startswith("imagefleet-request")


def test_a_calls_error_reaches_its_caller() -> None:
    def fails(x: int, *, why: str) -> None:
        raise ValueError(f"{x} {why}")

    with pytest.raises(ValueError, match="3 because"):
        asyncio.run(blocking.run_blocking(fails, 3, why="because"))


def test_a_cancelled_caller_is_cancelled_only_once_its_call_has_ended() -> None:
    """As with anyio's threads: a request cancelled mid-transaction (its client went away) does
    not leave the transaction running on its own while the request's clean-up runs."""
    ended: list[float] = []

    def slow() -> None:
        time.sleep(0.3)
        ended.append(time.monotonic())

    async def main() -> float:
        task = asyncio.create_task(blocking.run_blocking(slow))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic()

    cancelled_at = asyncio.run(main())
    assert ended and ended[0] <= cancelled_at


def test_threads_are_split_three_to_one_with_at_least_one_each() -> None:
    assert blocking.split_threads(16) == (12, 4)
    assert blocking.split_threads(4) == (3, 1)
    assert blocking.split_threads(2) == (1, 1)
    assert blocking.split_threads(1) == (1, 1)


def test_a_pool_of_another_size_replaces_the_old_one() -> None:
    async def in_flight(n: int) -> int:
        started = threading.Barrier(n + 1, timeout=5)
        calls = [asyncio.create_task(blocking.run_blocking(started.wait)) for _ in range(n)]
        await asyncio.to_thread(started.wait)  # every call is on a thread of its own at once
        await asyncio.gather(*calls)
        return n

    try:
        blocking.configure(3)
        assert asyncio.run(in_flight(3)) == 3
        blocking.configure(5)
        assert asyncio.run(in_flight(5)) == 5
    finally:
        blocking.configure(blocking.DEFAULT_THREADS)
