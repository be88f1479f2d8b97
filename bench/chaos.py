"""Chaos run: many jobs through a real fleet while it is being broken, then an audit.

The fleet is real: one `imagefleet serve` process and `imagefleet worker` processes on this
machine, talking HTTP. Jobs are submitted through the client API, each with its own
Idempotency-Key, and every submit is retried on connection errors and 5xx answers, as a careful
client would; the key makes a retry after a lost answer return the first job instead of
queueing a second one. While the workers run them:

- a random worker gets SIGKILL every --kill-every seconds on average (exponential gaps, so kills
  bunch up now and then) and a replacement is started at once: the pool stays at --workers;
- the orchestrator is restarted --orchestrator-restarts times on the same port and data: the
  first time (when there are two or more) with SIGKILL in the middle of the submits, the others
  with SIGTERM/SIGKILL in turn while the workers are busy;
- on PostgreSQL the database goes away once: by default the orchestrator reaches it through a
  TCP forwarder (tests/tcp_proxy.py) that is cut for --pg-outage-seconds, which drops every
  connection and refuses new ones like a server restart does, without restarting the server
  other test runs share; `--pg-outage restart` restarts the real server with pg_ctlcluster.

Leases are short (3 s, reaped every 0.5 s) so that every kill costs a requeue within seconds, and
max_attempts is 10 so that chaos alone never fails a job. Workers run the sleep engine
(tests/chaos_engine.py: a random 0.2-1.0 s per job, real PNGs) unless `--engine diffusers`
asks for the real pipeline on the demo model.

When every job is final, everything is stopped and the database is audited. The invariants:
every submit was acknowledged and made exactly one job; every acknowledged job succeeded
(none lost); each has exactly one attempt with outcome `succeeded` (the job's result attempt)
and exactly one accepted set of artifacts, all from that attempt, whose files exist with the
recorded sha256 and decode as PNGs of the requested size; no attempt is left running, and the
job's attempt counter matches its attempt rows.

    .venv/bin/python bench/chaos.py                       # SQLite, 1,000 jobs, 8 workers
    .venv/bin/python bench/chaos.py --backend postgresql  # server: --pg-admin-url
    .venv/bin/python bench/chaos.py --engine diffusers --jobs 50

Exit status: 0 when every invariant holds, 1 when one is broken, 2 when the run could not be
set up, 130 on Ctrl-C. Everything started here is stopped on exit, on error and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `bench.*` and `tests.*` when run as a script

from bench.chaos_lib.config import REPO_ROOT, SLEEP_ENGINE, ChaosConfig, SetupError  # noqa: E402
from bench.chaos_lib.report import (  # noqa: E402
    DOCS_FILE,
    backend_version,
    docs_subsection,
    write_docs,
)
from bench.chaos_lib.run import run_chaos  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    assert __doc__ is not None
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    d = ChaosConfig()
    parser.add_argument("--jobs", type=int, default=d.jobs, help="Jobs to submit.")
    parser.add_argument("--workers", type=int, default=d.workers, help="Worker pool size.")
    parser.add_argument(
        "--kill-every",
        type=float,
        default=d.kill_every,
        help="Mean seconds between worker SIGKILLs (exponential gaps); 0: no kills.",
    )
    parser.add_argument(
        "--orchestrator-restarts",
        type=int,
        default=d.orchestrator_restarts,
        help="Orchestrator restarts during the run.",
    )
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default=d.backend)
    parser.add_argument(
        "--engine",
        default=d.engine,
        help="Worker --engine: the sleep engine (default) or 'diffusers' for the real "
        "pipeline on the demo model.",
    )
    parser.add_argument(
        "--timeout", type=float, default=d.timeout, help="Seconds for all jobs to finish."
    )
    parser.add_argument("--seed", type=int, default=None, help="Seed of the chaos schedule.")
    parser.add_argument("--sleep-min", type=float, default=d.sleep_min, help="Sleep engine.")
    parser.add_argument("--sleep-max", type=float, default=d.sleep_max, help="Sleep engine.")
    parser.add_argument("--size", type=int, default=d.size, help="Image width and height.")
    parser.add_argument("--steps", type=int, default=d.steps, help="Denoising steps per job.")
    parser.add_argument(
        "--pg-outage",
        choices=("proxy", "restart"),
        default=d.pg_outage,
        help="proxy: cut a TCP forwarder between orchestrator and database (default); "
        "restart: restart the real server with pg_ctlcluster (disturbs anything else using it).",
    )
    parser.add_argument("--pg-outage-seconds", type=float, default=d.pg_outage_seconds)
    parser.add_argument("--pg-admin-url", default=d.pg_admin_url, help="Where to create the DB.")
    parser.add_argument(
        "--attackers",
        type=int,
        default=d.attackers,
        help="Simulated workers that complete, fail and heartbeat at lease expiry (0: none).",
    )
    parser.add_argument("--scratch", type=Path, default=None, help="Logs and data go here.")
    parser.add_argument("--keep", action="store_true", help="Keep logs and data afterwards.")
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help=f"Write the figures into the Chaos section of {DOCS_FILE.relative_to(REPO_ROOT)}.",
    )
    return parser.parse_args(argv)


def config_from(args: argparse.Namespace) -> ChaosConfig:
    engine = SLEEP_ENGINE if args.engine in ("sleep", SLEEP_ENGINE) else args.engine
    return ChaosConfig(
        jobs=args.jobs,
        workers=args.workers,
        kill_every=args.kill_every,
        orchestrator_restarts=args.orchestrator_restarts,
        backend=args.backend,
        engine=engine,
        timeout=args.timeout,
        seed=args.seed,
        sleep_min=args.sleep_min,
        sleep_max=args.sleep_max,
        size=args.size,
        steps=args.steps,
        pg_outage=args.pg_outage,
        pg_outage_seconds=args.pg_outage_seconds,
        pg_admin_url=args.pg_admin_url,
        attackers=args.attackers,
        scratch=args.scratch,
        keep=args.keep,
    )


def _raise_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the `finally` that stops the children


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    config = config_from(args)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    # Installed explicitly: a background job of a non-interactive shell starts with SIGINT
    # ignored, and Ctrl-C must still unwind through the cleanup.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        report = run_chaos(config, lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130
    except SetupError as exc:
        print(f"setup failed: {exc}", file=sys.stderr)
        return 2
    print()
    print(report.table())
    if report.violations:
        print("\nINVARIANTS BROKEN:")
        for line in report.violations:
            print(f"  - {line}")
    else:
        print("\nevery invariant held")
    if args.write_docs:
        command = shlex.join([".venv/bin/python", "bench/chaos.py", *argv])
        backend = backend_version(config.pg_admin_url if config.backend == "postgresql" else "")
        write_docs(docs_subsection(report, command, backend), config.variant)
        print(f"figures written to {DOCS_FILE}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
