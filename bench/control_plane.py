"""Control-plane benchmark: how many job lifecycles per second the orchestrator sustains, how
fast a claim is answered, and what the database does for each job, with no GPU involved.

Simulated workers (HTTP clients that claim, heartbeat once and complete at once with a tiny
PNG inside the complete call) and submitters run against real `imagefleet serve` processes on
SQLite and PostgreSQL, with one and two replicas. Right before each such run the bare-SQL floor
(bare.py: 3 transactions per job on its own table, as many connections as the run has clients,
no HTTP) runs on the same database: HTTP lifecycles/s over it is the headline ratio. The same
lifecycle is also run straight through `JobLifecycle` in one thread (the `floor` part).

    .venv/bin/python bench/control_plane.py all --write-docs     # everything, ~8 min on 2 cores
    .venv/bin/python bench/control_plane.py throughput --jobs 1000 --workers 16
    .venv/bin/python bench/control_plane.py floor
    .venv/bin/python bench/control_plane.py idle --idle-workers 100
    .venv/bin/python bench/control_plane.py depth --depths 1000,100000,1000000
    .venv/bin/python bench/control_plane.py backlog --backlog-jobs 600

Parts:
  throughput  lifecycles/s (first submit to last complete) and its ratio to the bare-SQL
              floor measured just before, claim latency, errors, SQL
              statements and transactions per lifecycle (counted inside the server processes),
              CPU per lifecycle split between server, PostgreSQL, the simulated clients and
              anything else running on the machine.
  floor       the same lifecycle in-process on the database, one thread: the database's own
              cost per job, which the HTTP figures are divided by; statements counted per step.
  idle        one stream of jobs at a modest rate while 100 idle workers long-poll (workers
              that could take the jobs too, or ones too small for them); how long a new job
              waits before a worker has it.
  backlog     the same simulated workers draining jobs queued beforehand (a hub at its
              peak), claiming after each completion and sending the next claim with it (as
              the real worker does), on one server: lifecycles/s and SQL per job of each.
  depth       claim latency with 1,000 / 100,000 / 1,000,000 queued jobs (filled with SQL
              straight into the jobs table), and EXPLAIN of the claim's candidate query.

Everything started here (orchestrators, threads, databases, scratch files) is stopped, dropped
or deleted on exit, on error and on Ctrl-C; every loop is bounded in time.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `bench.*` and `tests.harness` when run as a script

import psycopg  # noqa: E402

from bench.common.machine import cpu_model, wait_for_quiet  # noqa: E402
from bench.common.report import say  # noqa: E402
from bench.control_plane_lib.backlog import backlog_table, run_backlog  # noqa: E402
from bench.control_plane_lib.depth import run_depth  # noqa: E402
from bench.control_plane_lib.floor import run_floor  # noqa: E402
from bench.control_plane_lib.idle import IDLE_VARIANTS, run_idle  # noqa: E402
from bench.control_plane_lib.report import (  # noqa: E402
    Results,
    docs_section,
    idle_table,
    report,
    throughput_table,
    write_docs,
)
from bench.control_plane_lib.stack import BACKENDS, DOCS, PG_ADMIN_URL, SECTION, Bench  # noqa: E402
from bench.control_plane_lib.throughput import run_throughput  # noqa: E402


def csv_ints(value: str) -> list[int]:
    return [int(v.replace("_", "")) for v in value.split(",") if v]


def csv_words(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "part",
        choices=("throughput", "floor", "idle", "backlog", "depth", "all"),
        help="What to measure.",
    )
    parser.add_argument("--backends", type=csv_words, default=list(BACKENDS))
    parser.add_argument("--replicas", type=csv_ints, default=[1, 2], help="For throughput.")
    parser.add_argument("--jobs", type=int, default=1000, help="Throughput: measured jobs.")
    parser.add_argument("--workers", type=int, default=16, help="Throughput: simulated workers.")
    parser.add_argument("--submitters", type=int, default=4, help="Throughput: submit threads.")
    parser.add_argument("--warmup", type=int, default=50, help="Unmeasured lifecycles first.")
    parser.add_argument(
        "--plain-claims",
        action="store_true",
        help="Throughput: the workers claim with a call of their own after each completion "
        "(the protocol before `next`; the default sends the next claim with the completion, "
        "as the real worker does).",
    )
    parser.add_argument("--floor-jobs", type=int, default=2000, help="Floor: lifecycles at most.")
    parser.add_argument("--floor-seconds", type=float, default=15.0, help="Floor: time bound.")
    parser.add_argument(
        "--backlog-jobs", type=int, default=600, help="Backlog: jobs queued before each drain."
    )
    parser.add_argument(
        "--backlog-modes",
        type=csv_words,
        default=["plain", "next"],
        help="Backlog: plain (a claim call after each completion), next (the claim sent with "
        "the completion).",
    )
    parser.add_argument("--idle-workers", type=int, default=100)
    parser.add_argument(
        "--idle-variants",
        type=csv_words,
        default=["none", "same", "small"],
        help="none: baseline; same: idle workers could take the jobs too; other: they serve "
        "another job kind; small: they see the jobs but are too small for them.",
    )
    parser.add_argument("--idle-backends", type=csv_words, default=["postgresql", "sqlite"])
    parser.add_argument("--idle-rate", type=float, default=10.0, help="Idle: submits per second.")
    parser.add_argument("--idle-seconds", type=float, default=12.0, help="Idle: submitting time.")
    parser.add_argument("--idle-wait", type=float, default=10.0, help="Idle: long-poll seconds.")
    parser.add_argument("--idle-settle", type=float, default=3.0, help="Idle: seconds to settle.")
    parser.add_argument(
        "--depths", type=csv_ints, default=[1000, 100_000, 1_000_000], help="PostgreSQL depths."
    )
    parser.add_argument(
        "--sqlite-depths", type=csv_ints, default=[1000, 100_000, 1_000_000], help="SQLite."
    )
    parser.add_argument("--depth-claims", type=int, default=200, help="Depth: measured claims.")
    parser.add_argument(
        "--depth-seconds", type=float, default=30.0, help="Depth: time bound on the claims."
    )
    parser.add_argument("--depth-submits", type=int, default=30, help="Depth: timed submits.")
    parser.add_argument("--fill-timeout", type=float, default=300.0, help="Depth: fill bound.")
    parser.add_argument("--run-timeout", type=float, default=240.0, help="Bound on each run.")
    parser.add_argument(
        "--quiet-wait", type=float, default=120.0, help="Wait this long at most for load < 1."
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="Profile a PostgreSQL server with py-spy in an extra throughput run.",
    )
    parser.add_argument("--profile-out", type=Path, default=None, help="Keep py-spy's raw data.")
    parser.add_argument("--json", type=Path, default=None, help="Also write raw figures here.")
    parser.add_argument("--write-docs", action="store_true", help="Update docs/benchmarks.md.")
    args = parser.parse_args(argv)
    unknown = [b for b in [*args.backends, *args.idle_backends] if b not in BACKENDS]
    unknown += [v for v in args.idle_variants if v not in IDLE_VARIANTS]
    unknown += [m for m in args.backlog_modes if m not in ("plain", "next")]
    if unknown:
        parser.error(f"unknown backend, idle variant or backlog mode: {', '.join(unknown)}")
    return args


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C, through every clean-up."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A shell's background job inherits SIGINT ignored; Ctrl-C and kill -INT must still work.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    command = shlex.join([".venv/bin/python", "bench/control_plane.py", *sys.argv[1:]])
    load, waited = wait_for_quiet(args.quiet_wait)
    context = {
        "command": command,
        "date": datetime.now(UTC).strftime("%a %b %d %H:%M:%S UTC %Y"),
        "cpu": cpu_model(),
        "postgres": "",
        "load": f"{load:.2f}",
        "quiet": "quiet" if load < 1.0 else f"never under 1.0 after waiting {waited:.0f}s",
    }
    say(f"load average {load:.2f}; scratch under {tempfile.gettempdir()}")
    bench = Bench(args)
    results = Results()
    part = args.part
    try:
        if "postgresql" in [*args.backends, *args.idle_backends]:
            with psycopg.connect(PG_ADMIN_URL, connect_timeout=5) as conn:
                row = conn.execute("SHOW server_version").fetchone()
                context["postgres"] = f"PostgreSQL {row[0] if row else '?'} on the same machine"
        if part in ("floor", "all"):
            for backend in args.backends:
                results.floor.append(run_floor(bench, backend, with_reads=False))
                results.floor.append(run_floor(bench, backend, with_reads=True))
        if part in ("throughput", "all"):
            for backend in args.backends:
                for replicas in args.replicas:
                    results.throughput.append(run_throughput(bench, backend, replicas))
                    say(throughput_table(Results(throughput=results.throughput[-1:])))
            if args.profile and "postgresql" in args.backends:
                profiled = run_throughput(bench, "postgresql", 1, profile=True)
                say(f"profiled run (not reported): {profiled.per_second:.1f} lifecycles/s")
        if part in ("idle", "all"):
            for backend in args.idle_backends:
                for variant in args.idle_variants:
                    results.idle.append(run_idle(bench, backend, variant))
                    say(idle_table(Results(idle=results.idle[-1:])))
        if part in ("backlog", "all"):
            for backend in args.backends:
                results.backlog.extend(run_backlog(bench, backend))
                say(backlog_table(results.backlog[-2:]))
        if part in ("depth", "all"):
            for backend in args.backends:
                depths = args.depths if backend == "postgresql" else args.sqlite_depths
                if depths:
                    results.depth.extend(run_depth(bench, backend, depths))
    except KeyboardInterrupt:
        say("interrupted: stopping everything started here")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip clean-up
        bench.close()
        signal.signal(signal.SIGINT, signal.default_int_handler)
    text_report = report(results, bench)
    say("\n" + text_report)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "context": context,
                    **{k: [vars(r) for r in v] for k, v in vars(results).items()},
                },
                indent=2,
                default=str,
            )
        )
    if args.write_docs:
        write_docs(docs_section(results, bench, context))
        say(f"wrote the {SECTION!r} section of {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
