"""The submits' snapshot of the workers seen (`orchestrator.seen_workers`): fresh for its time by
the lifecycle's clock, ended by a recorded report, and never kept from a read that an
invalidation overtook."""

from __future__ import annotations

from imagefleet.orchestrator.seen_workers import SeenSnapshot
from imagefleet.scheduling.waiting import SeenWorker


def worker(name: str) -> SeenWorker:
    return SeenWorker(
        worker_id=name,
        kinds=frozenset({"txt2img"}),
        max_pixels=4096,
        vram_mb=0,
        resident_models=frozenset(),
        cached_models=frozenset(),
        live=True,
        busy=False,
    )


def test_the_snapshot_stands_for_its_time_and_a_recorded_report_ends_it() -> None:
    snapshot = SeenSnapshot(fresh_seconds=1.0)
    reads: list[str] = []

    def load(name: str) -> list[SeenWorker]:
        reads.append(name)
        return [worker(name)]

    assert snapshot.read(100.0, lambda: load("a")) == ([worker("a")], False)
    assert snapshot.read(100.9, lambda: load("b")) == ([worker("a")], True)
    assert snapshot.read(101.0, lambda: load("c")) == ([worker("c")], False)  # aged out
    snapshot.invalidate()
    assert snapshot.read(101.1, lambda: load("d")) == ([worker("d")], False)
    assert snapshot.read(50.0, lambda: load("e")) == ([worker("e")], False)  # clock went back
    assert reads == ["a", "c", "d", "e"]


def test_a_read_an_invalidation_overtook_is_not_kept() -> None:
    snapshot = SeenSnapshot(fresh_seconds=60.0)

    def overtaken() -> list[SeenWorker]:
        snapshot.invalidate()  # a claim committed a new report while this read ran
        return [worker("old")]

    assert snapshot.read(1.0, overtaken) == ([worker("old")], False)
    assert snapshot.read(2.0, lambda: [worker("new")]) == ([worker("new")], False)
    assert snapshot.read(3.0, lambda: []) == ([worker("new")], True)
