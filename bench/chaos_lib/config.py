"""What a chaos run depends on (its settings, with the issue's full run as the defaults) and
the record of one orchestrator restart."""

from __future__ import annotations

import itertools
import os
import signal
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SLEEP_ENGINE = "tests.chaos_engine:SleepEngine"
FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
DEFAULT_PG_ADMIN_URL = os.environ.get(
    "IMAGEFLEET_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
# When the database outage happens on PostgreSQL, as a fraction of jobs succeeded: away from the
# orchestrator restarts (which land at 1/R, 2/R, ... of the run).
DB_OUTAGE_AT = 0.3
STOP_GRACE_SECONDS = 15.0
STARTUP_TIMEOUT = 120.0


class SetupError(RuntimeError):
    """The fleet could not be started; nothing about the invariants is known."""


@dataclass
class ChaosConfig:
    """Everything a run depends on; the defaults are the issue's full run."""

    jobs: int = 1000
    workers: int = 8
    kill_every: float = 10.0  # mean seconds between worker SIGKILLs; 0 disables them
    orchestrator_restarts: int = 2
    backend: str = "sqlite"  # or "postgresql"
    engine: str = SLEEP_ENGINE
    timeout: float = 1800.0  # seconds from the first submit until every job must be final
    seed: int | None = None  # for the chaos schedule (which worker, when); None: random
    sleep_min: float = 0.2
    sleep_max: float = 1.0
    size: int = 64
    steps: int = 4
    lease_seconds: float = 3.0
    max_attempts: int = 10
    pg_outage: str = "proxy"  # or "restart"
    pg_outage_seconds: float = 5.0
    pg_admin_url: str = DEFAULT_PG_ADMIN_URL
    # Simulated workers that complete, fail and heartbeat at lease expiry (tests/harness/
    # races.py), beside the real ones; every answer they get is audited against the database.
    attackers: int = 4
    scratch: Path | None = None  # logs and data; default a temporary folder
    keep: bool = False  # keep the scratch folder (and the PostgreSQL database) afterwards

    @property
    def restart_signals(self) -> list[signal.Signals]:
        """SIGKILL first (it lands among the submits, where an answer lost with the process
        tests the Idempotency-Key), then alternating."""
        cycle = itertools.cycle((signal.SIGKILL, signal.SIGTERM))
        return [next(cycle) for _ in range(self.orchestrator_restarts)]

    def restart_triggers(self) -> list[tuple[str, float]]:
        """When each orchestrator restart happens: ("submitted" | "succeeded", fraction)."""
        count = self.orchestrator_restarts
        if count <= 1:
            return [("succeeded", 0.5)] * count
        return [("submitted", 0.5)] + [("succeeded", k / count) for k in range(1, count)]

    @property
    def variant(self) -> str:
        """The docs subsection this run's figures go to."""
        backend = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}[self.backend]
        engine = "sleep engine" if self.engine == SLEEP_ENGINE else f"{self.engine} engine"
        if self.engine == "diffusers":
            engine = "diffusers engine on the demo model"
        return f"{backend}, {engine}"


@dataclass
class Restart:
    signal: str
    stop_seconds: float  # from the signal until the process was gone
    start_seconds: float  # from then until /healthz answered again
    note: str = ""

    @property
    def downtime(self) -> float:
        return self.stop_seconds + self.start_seconds
