"""The figures of one chaos run, as a table for the terminal and as a subsection of
docs/benchmarks.md."""

from __future__ import annotations

import os
import sqlite3
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from bench.chaos_lib.config import (
    REPO_ROOT,
    ChaosConfig,
    Restart,
)
from bench.common.machine import machine_description, utc_date

DOCS_FILE = REPO_ROOT / "docs" / "benchmarks.md"
DOCS_SECTION = "## Chaos"


@dataclass
class ChaosReport:
    """The figures of one run and the invariants it broke (none, hopefully)."""

    config: ChaosConfig
    acknowledged: int = 0
    created: int = 0  # 201 answers
    replayed: int = 0  # 200 answers: a retried submit whose first try had gone through
    submit_retries: int = 0
    succeeded: int = 0
    failed: int = 0
    duplicates: int = 0  # jobs with more than one succeeded attempt or accepted artifact set
    lost: int = 0  # acknowledged, but not succeeded at the end
    attempts_histogram: dict[int, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    kills: int = 0
    kill_interrupted: int = 0  # attempts that ended lease_expired on a killed worker's node
    restarts: list[Restart] = field(default_factory=list)
    db_outages: list[str] = field(default_factory=list)
    dropped_by_workers: int = 0
    server_errors: int = 0
    quarantined_nodes: int = 0
    worker_starts: list[float] = field(default_factory=list)
    unexpected_exits: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0
    setup_seconds: float = 0.0
    timed_out: bool = False
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)  # of the machine, at the start
    attack_calls: dict[str, int] = field(default_factory=dict)  # timing attacks sent, by call
    contradicted: int = 0  # attack answers the database contradicts (stale 2xx, 5xx)
    deadlocks: int | None = None  # PostgreSQL's deadlock count during the run
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def rows(self) -> list[tuple[str, str]]:
        """(figure, value) pairs, for the terminal and the docs alike."""
        n = self.config.jobs
        histogram = ", ".join(f"{k}: {v}" for k, v in sorted(self.attempts_histogram.items()))
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))
        restarts = "; ".join(
            f"{r.signal}, down {r.downtime:.1f} s (stop {r.stop_seconds:.1f} s, start "
            f"{r.start_seconds:.1f} s{', ' + r.note if r.note else ''})"
            for r in self.restarts
        )
        starts = self.worker_starts
        start_text = (
            f"mean {statistics.fmean(starts):.1f} s, max {max(starts):.1f} s ({len(starts)})"
            if starts
            else "-"
        )
        rate = self.succeeded / self.wall_seconds if self.wall_seconds else 0.0
        return [
            ("jobs submitted and acknowledged", f"{self.acknowledged} / {n}"),
            (
                "submit retries (answers replayed by Idempotency-Key)",
                f"{self.submit_retries} ({self.replayed})",
            ),
            ("succeeded (must be N)", f"{self.succeeded}"),
            (
                "timing attacks at lease expiry (calls)",
                ", ".join(f"{k} {v}" for k, v in sorted(self.attack_calls.items())) or "-",
            ),
            ("stale or contradicted 2xx, 5xx to attacks (must be 0)", f"{self.contradicted}"),
            (
                "deadlocks counted by PostgreSQL (must be 0)",
                "-" if self.deadlocks is None else f"{self.deadlocks}",
            ),
            ("accepted duplicates (must be 0)", f"{self.duplicates}"),
            ("lost (must be 0)", f"{self.lost}"),
            ("failed", f"{self.failed}"),
            ("attempts per job: jobs", histogram or "-"),
            ("attempt outcomes", outcomes or "-"),
            (
                "worker SIGKILLs (attempts they interrupted)",
                f"{self.kills} ({self.kill_interrupted})",
            ),
            (
                "orchestrator restarts",
                f"{len(self.restarts)}{': ' + restarts if restarts else ''}",
            ),
            ("database outages", "; ".join(self.db_outages) or "-"),
            ("attempts dropped by workers after a 409 (lease lost)", f"{self.dropped_by_workers}"),
            ("orchestrator 5xx answers", f"{self.server_errors}"),
            ("nodes quarantined", f"{self.quarantined_nodes}"),
            ("worker start, spawn to first claim", start_text),
            ("unexpected process exits", f"{len(self.unexpected_exits)}"),
            ("wall time, first submit to last job final", f"{self.wall_seconds:.1f} s"),
            ("throughput under chaos", f"{rate:.2f} jobs/s"),
        ]

    def table(self) -> str:
        lines = ["| figure | value |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in self.rows()]
        return "\n".join(lines)


DOCS_INTRO = """\
`bench/chaos.py` pushes jobs through a real fleet (one `imagefleet serve`, worker processes,
all on one machine) while it breaks it: random workers get SIGKILL (a replacement starts each
time, so the pool stays full), the orchestrator is restarted on the same port and data (SIGKILL
in the middle of the submits, SIGTERM while workers are busy), and on PostgreSQL the database
connection is cut for a few seconds. Leases are 3 s, reaped every 0.5 s; max_attempts is 10.
Submits carry an Idempotency-Key and are retried on connection errors.

Afterwards the database is audited: every acknowledged job succeeded (none lost), exactly once
(one attempt with outcome `succeeded`, one accepted set of artifacts, from that attempt), and
every accepted file is on disk with its recorded sha256 and decodes as a PNG of the requested
size. The run exits non-zero when any of that fails. The figures below are from single runs
on a machine shared with other work (see the load average), so the timings are rough.

Beside the real workers, `--attackers N` runs simulated workers (tests/harness/races.py, the
same code as tests/integration/test_exactly_once.py) that claim jobs and then complete, fail or
heartbeat within 0.3 s either side of their lease's expiry, complete twice at once, or complete
and fail the same attempt at once. Every answer they get is checked against the database after
the run: a 2xx that the stored state contradicts (a complete answered "succeeded" for a job
another attempt won, a fail acknowledged for an attempt the reaper took, a heartbeat granted a
lease the reaper then revoked early) or any 5xx other than the 503 of a database outage is a
violation; on PostgreSQL the database's own deadlock counter must not move.

"Attempts dropped by workers after a 409" are results thrown away because the lease had moved
on: a kill (a job finished by nobody is requeued after its lease), an orchestrator restart or a
database outage longer than what the lease allowed. "Orchestrator 5xx answers" on PostgreSQL
are the documented 503s while the database connection is cut."""


def backend_version(fleet_url: str) -> str:
    if not fleet_url.startswith("postgresql"):
        return f"SQLite {sqlite3.sqlite_version}"
    try:
        import psycopg

        with psycopg.connect(fleet_url, connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return f"PostgreSQL {row[0] if row else '?'}"
    except Exception:
        return "PostgreSQL"


def docs_subsection(report: ChaosReport, command: str, backend: str) -> str:
    config = report.config
    verdict = (
        "every invariant held"
        if report.ok
        else "INVARIANTS BROKEN: " + "; ".join(report.violations[:5])
    )
    lines = [
        f"### {config.variant}",
        "",
        f"Command: `{command}`  ",
        f"Date: {utc_date()}  ",
        f"Machine: {machine_description()}; {backend}; load average at the start "
        f"{', '.join(f'{x:.1f}' for x in report.load_average)}  ",
        f"Setup: {config.jobs} jobs of {config.size}x{config.size}, {config.steps} steps, "
        f"{config.workers} workers, a SIGKILL every {config.kill_every:g} s on average, "
        f"{config.orchestrator_restarts} orchestrator restarts"
        + (f", one database outage ({config.pg_outage})" if config.backend == "postgresql" else "")
        + f"; fleet start-up before the first submit: {report.setup_seconds:.0f} s  ",
        f"Result: {verdict}",
        "",
        report.table(),
    ]
    return "\n".join(lines)


def write_docs(subsection: str, title: str, path: Path = DOCS_FILE) -> None:
    """Replaces this variant's subsection of the "## Chaos" section, keeping every other
    section of the file (other benchmarks write them) and the other variants' subsections.

    The file is read right before it is written and replaced in one rename, so a concurrent
    writer of another section loses nothing unless both write in the same instant."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == DOCS_SECTION), None)
    if start is None:
        before, after, section = lines, [], []
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        before, section, after = lines[:start], lines[start + 1 : end], lines[end:]
    subsections: dict[str, list[str]] = {}
    current: str | None = None
    for line in section:
        if line.startswith("### "):
            current = line[4:].strip()
            subsections[current] = [line]
        elif current is not None:
            subsections[current].append(line)
    subsections[title] = subsection.splitlines()
    body = [DOCS_SECTION, "", *DOCS_INTRO.splitlines(), ""]
    ordered = sorted(subsections, key=lambda name: _variant_rank(name))
    for lines_of in (subsections[name] for name in ordered):
        while lines_of and not lines_of[-1].strip():
            lines_of.pop()
        body += [*lines_of, ""]
    while before and not before[-1].strip():
        before.pop()
    new = [*before, "", *body, *after]
    while new and not new[-1].strip():
        new.pop()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("\n".join(new) + "\n")
    os.replace(tmp, path)


def _variant_rank(title: str) -> int:
    """The issue's runs first, in a fixed order; any other variant after them."""
    known = [
        "SQLite, sleep engine",
        "PostgreSQL, sleep engine",
        "SQLite, diffusers engine on the demo model",
    ]
    return known.index(title) if title in known else len(known)
