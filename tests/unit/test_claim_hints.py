"""The replica's memory of the attempts it handed out (`ClaimHints`): used once, only by the key
that claimed, bounded, and safe to share between request threads."""

from __future__ import annotations

import threading
from typing import Any, cast

from imagefleet.orchestrator import claim_hints
from imagefleet.orchestrator.claim_hints import ClaimHints


def _row(name: str) -> Any:
    return cast(Any, name)  # the hints never look inside the row


def test_a_hint_serves_the_claiming_key_once() -> None:
    hints = ClaimHints()
    hints.remember("a1", "key-1", _row("job-1"))
    assert hints.take("a1", "key-2") is None  # another key: refused, and the hint is spent
    hints.remember("a2", "key-1", _row("job-2"))
    assert hints.take("a2", "key-1") == "job-2"
    assert hints.take("a2", "key-1") is None
    hints.remember("a3", "key-1", _row("job-3"))
    hints.forget("a3")
    assert hints.take("a3", "key-1") is None


def test_hints_are_bounded_and_the_oldest_go_first(monkeypatch: Any) -> None:
    monkeypatch.setattr(claim_hints, "CLAIMED_REMEMBERED", 3)
    hints = ClaimHints()
    for i in range(5):
        hints.remember(f"a{i}", "k", _row(f"job-{i}"))
    assert [hints.take(f"a{i}", "k") for i in range(5)] == [None, None, "job-2", "job-3", "job-4"]


def test_many_threads_remember_and_take_at_the_bound(monkeypatch: Any) -> None:
    monkeypatch.setattr(claim_hints, "CLAIMED_REMEMBERED", 50)
    hints = ClaimHints()
    errors: list[BaseException] = []

    def churn(worker: int) -> None:
        try:
            for i in range(2_000):
                hints.remember(f"{worker}-{i}", "k", _row("job"))
                hints.take(f"{worker}-{i - 7}", "k")
        except BaseException as exc:  # an eviction racing an insert must not raise
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
