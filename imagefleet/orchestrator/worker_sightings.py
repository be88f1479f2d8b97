"""The workers' sightings, recorded by their claims: the `workers` row (when a worker was last
seen, its capabilities) and what it holds (`worker_state`), each rewritten only when it changed
or is due, so that a fleet's long polls are not a write each."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from imagefleet.orchestrator.checkpoint_direct import DirectCheckpoints
from imagefleet.store import worker_state as state_sql
from imagefleet.store import workers as worker_sql
from imagefleet.worker_protocol import ClaimRequest

# A worker's row is rewritten at most this often (every claim would be a write per long poll).
WORKER_TOUCH_SECONDS = 10.0


class WorkerSightings(DirectCheckpoints):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._touched: dict[str, tuple[float, str, str]] = {}

    def _touch_due(self, request: ClaimRequest, report: tuple[str, str], now: float) -> bool:
        """Whether this claim must record the worker (`_touch_worker` would write)."""
        last = self._touched.get(request.worker_id)
        return not (last and last[1] == report[1] and now - last[0] < WORKER_TOUCH_SECONDS)

    def _touch_worker(
        self, conn: Connection, request: ClaimRequest, report: tuple[str, str], now: float
    ) -> None:
        """Records the worker's sighting, at most every WORKER_TOUCH_SECONDS per process unless
        its capabilities changed, and what it holds (`worker_state`, the one record of it) when
        that changed: the claim writes nothing when a worker repeats its report, and the upsert
        writes no row when another replica already recorded the same report."""
        capabilities, reported = report
        if not self._touch_due(request, report, now):
            return
        last = self._touched.get(request.worker_id)
        if last is None or last[2] != capabilities or now - last[0] >= WORKER_TOUCH_SECONDS:
            worker_sql.touch_worker(conn, request, now)
        state_sql.record(conn, request, now, WORKER_TOUCH_SECONDS)
        if len(self._touched) > 10_000:  # workers come and go; forget the old ones
            self._touched.clear()
        self._touched[request.worker_id] = (now, reported, capabilities)


def report_of(request: ClaimRequest) -> tuple[str, str]:
    """The worker's capabilities and its whole report (what it holds), as compared JSON."""
    capabilities = request.capabilities.model_dump_json()
    reported = request.model_dump_json(
        include={"capabilities", "resident_combos", "resident_models", "cached_models"}
    )
    return capabilities, reported
