"""The claim route's long poll around `claim_batch`, with the database left out: what it does
when its own waiter is woken while its look runs."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest

from imagefleet.orchestrator import routes_worker
from imagefleet.orchestrator.work_signal import WorkSignal
from imagefleet.store.database import WorkHint
from imagefleet.worker_protocol import ClaimRequest

JOB = WorkHint("txt2img", 64 * 64, None, "j1")


class _Connected:
    async def is_disconnected(self) -> bool:
        return False


def test_a_claim_woken_while_it_looks_looks_again_even_with_no_time_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The job's NOTIFY arrives while a `wait_seconds: 0` claim looks and wakes that claim's own
    waiter; the look, seeing a woken claim on its way to the job, skipped it. The claim must look
    again, woken, rather than answer "nothing" (fresh-clone CI saw it answer nothing)."""
    monkeypatch.setattr(routes_worker, "claim_answer", lambda taken, blocked=None: taken)

    async def scenario() -> tuple[list[tuple[bool, str | None]], Any]:
        loop = asyncio.get_running_loop()
        signal = WorkSignal(listening=True)
        calls: list[tuple[bool, str | None]] = []

        def claim_batch(
            key: Any, body: Any, woken: bool, looks: Any, woken_for: str | None
        ) -> list[Any]:
            calls.append((woken, woken_for))
            if not woken:
                loop.call_soon_threadsafe(signal.notify, JOB)
                time.sleep(0.05)  # the event loop delivers the wake-up meanwhile
                return []
            return [SimpleNamespace(job_id="j1")]

        lifecycle = SimpleNamespace(
            claim_batch=claim_batch, settings=SimpleNamespace(claim_wait_max_seconds=300.0)
        )
        body = ClaimRequest(worker_id="w", node_id="n", wait_seconds=0)
        answer = await routes_worker.claim(
            _Connected(),  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            body,
            lifecycle,  # type: ignore[arg-type]
            signal,
        )
        return calls, answer

    calls, answer = asyncio.run(scenario())
    assert calls == [(False, None), (True, "j1")]
    assert [a.job_id for a in answer] == ["j1"]
