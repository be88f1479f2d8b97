"""A replica's snapshot of the workers seen, for the submits: every submit needs them (the
warning for a job no worker could run, the answer's `queue`), and reading every recent worker's
report and the running jobs per submit grows with the fleet (600 workers, 100 submits a second:
60,000 rows a second read for advice).

The snapshot is advice, as the reports themselves are (a worker's report is up to 10 s old when
read): it stands for `SEEN_FRESH_SECONDS` by the lifecycle's clock, and a report this replica
records ends it, after that claim commits. A submit that finds its job unservable in the
snapshot reads the workers afresh before it warns, so no warning comes from the snapshot's age.
What the age can do is hide a fleet change another replica recorded under a second ago, the same
race a submit's own read has with a report written at that moment, made a second wider.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from imagefleet.scheduling.waiting import SeenWorker

SEEN_FRESH_SECONDS = 1.0


class SeenSnapshot:
    """The last read of the workers seen, with the generation it was read in: a read that began
    before an invalidation is not kept (it may predate the report that invalidated it)."""

    def __init__(self, fresh_seconds: float = SEEN_FRESH_SECONDS) -> None:
        self.fresh_seconds = fresh_seconds
        self._lock = threading.Lock()
        self._generation = 0
        self._taken: tuple[float, int, list[SeenWorker]] | None = None

    def read(
        self, now: float, load: Callable[[], list[SeenWorker]]
    ) -> tuple[list[SeenWorker], bool]:
        """The workers seen, from the snapshot while it is fresh, else from `load` (kept for
        the next submits); and whether they came from the snapshot."""
        with self._lock:
            taken = self._taken
            if taken is not None and 0 <= now - taken[0] < self.fresh_seconds:
                return taken[2], True
            generation = self._generation
        workers = load()
        with self._lock:
            if generation == self._generation:
                self._taken = (now, generation, workers)
        return workers, False

    def invalidate(self) -> None:
        """A worker's report was recorded (and committed): the next submit reads afresh."""
        with self._lock:
            self._generation += 1
            self._taken = None
