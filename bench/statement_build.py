"""What building a SQLAlchemy Core statement per call costs against building it once: the
reason the lifecycle's statements are module constants with bound parameters (docs/
architecture.md, "Statements built once").

Three statements of the lifecycle, each run both ways in the same process against the same
in-memory SQLite database (the building is Python and the same on PostgreSQL): a job read by
primary key (`store.jobs.get_job`), an event insert (`store.events.record`) and the claim's probe
union with eight probes (`store.claim_probes`, the statement every claim runs). The
baseline is the statement built per call, measured in the same run; the table reports µs per
execution and the ratio.

    .venv/bin/python bench/statement_build.py
    .venv/bin/python bench/statement_build.py --runs 5000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import Connection, create_engine, insert, select  # noqa: E402

from bench.common.report import say, table  # noqa: E402
from imagefleet.store import claim_probes, events  # noqa: E402
from imagefleet.store.jobs import get_job  # noqa: E402
from imagefleet.store.tables import job_events, jobs, metadata  # noqa: E402

JOB_ID = "0" * 32
SHAPES = (
    ("priority", 16),
    ("priority", 16),
    *((("owner", 1),) * 4),
    ("combo", 4),
    ("checkpoint", 4),
)
UNION_VALUES: dict[str, Any] = {
    "node": "n1",
    "kinds": ["txt2img"],
    "max_pixels": 1 << 20,
    "now": 1.0,
    "vram": 24_000,
    **{
        f"v{n}": 0 if kind in ("priority", "checkpoint") else "x"
        for n, (kind, _) in enumerate(SHAPES)
    },
}


def per_call_read(conn: Connection) -> None:
    conn.execute(select(jobs).where(jobs.c.id == JOB_ID)).mappings().first()


def per_call_event(conn: Connection) -> None:
    row = {"job_id": JOB_ID, "owner_key_id": "k", "event": "e", "data": "{}", "created_at": 1.0}
    conn.execute(insert(job_events).values(**row))


def once_event(conn: Connection) -> None:
    events.record(conn, job_id=JOB_ID, owner_key_id="k", event="e", data={}, now=1.0)


def per_call_union(conn: Connection) -> None:
    build = claim_probes._probe_union.__wrapped__  # the same builder, without its cache
    conn.execute(build(SHAPES, True), UNION_VALUES).all()


def once_union(conn: Connection) -> None:
    conn.execute(claim_probes._probe_union(SHAPES, True), UNION_VALUES).all()


def timed(conn: Connection, call: Callable[[Connection], Any], runs: int) -> float:
    """µs per call, after a warm-up that fills SQLAlchemy's compiled cache."""
    for _ in range(50):
        call(conn)
    started = time.perf_counter()
    for _ in range(runs):
        call(conn)
    return (time.perf_counter() - started) / runs * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2000, help="Executions of each variant.")
    parser.add_argument("--json", help="Also write the figures here.")
    args = parser.parse_args()
    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    pairs = {
        "job by id (get_job)": (per_call_read, lambda conn: get_job(conn, JOB_ID)),
        "event insert (events.record)": (per_call_event, once_event),
        "claim probe union, 8 probes": (per_call_union, once_union),
    }
    rows, figures = [], {}
    with engine.connect() as conn:
        for name, (per_call, once) in pairs.items():
            say(f"timing: {name}")
            built, kept = timed(conn, per_call, args.runs), timed(conn, once, args.runs)
            figures[name] = {"built_per_call_us": built, "built_once_us": kept}
            rows.append([name, f"{built:,.0f}", f"{kept:,.0f}", f"{built / kept:.1f}x"])
    print(table(["statement", "built per call µs", "built once µs", "ratio"], rows))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
