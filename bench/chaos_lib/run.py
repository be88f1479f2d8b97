"""A chaos run: start the fleet, submit while breaking it (worker kills, orchestrator restarts,
a database outage), then audit."""

from __future__ import annotations

import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.chaos_lib.audit import audit, audit_attacks
from bench.chaos_lib.clients import StatusCounts, Submitter
from bench.chaos_lib.config import (
    DB_OUTAGE_AT,
    FINAL_STATUSES,
    ChaosConfig,
)
from bench.chaos_lib.fleet import ChaosFleet
from bench.chaos_lib.report import ChaosReport
from tests.harness.races import AnswerLog, start_attackers


def run_chaos(config: ChaosConfig, say: Callable[[str], None] = print) -> ChaosReport:
    """Starts a fleet, submits config.jobs jobs while breaking it, audits the database.

    Raises SetupError when the fleet cannot be started. Whatever it started is stopped before
    it returns or raises; the scratch folder is kept when asked, or when something failed.
    """
    scratch = config.scratch or Path(tempfile.mkdtemp(prefix="imagefleet-chaos-"))
    scratch.mkdir(parents=True, exist_ok=True)
    report = ChaosReport(config)
    report.load_average = os.getloadavg()
    fleet = ChaosFleet(config, scratch, say)
    keep = config.keep
    try:
        began = time.monotonic()
        say(f"preparing {config.backend} fleet in {scratch} ...")
        fleet.prepare()
        fleet.start_orchestrator()
        say(f"orchestrator at {fleet.url}; starting {config.workers} workers ...")
        fleet.start_chaos_workers(config.workers)
        report.setup_seconds = time.monotonic() - began
        say(f"fleet up after {report.setup_seconds:.1f} s; submitting {config.jobs} jobs")
        submitter = Submitter(fleet.url, fleet.client_key, config)
        deadlocks_before = fleet.pg_deadlocks()
        log = AnswerLog()
        stop_attacks, attackers = start_attackers(
            config.attackers, [fleet.url], fleet.worker_key, log, seed=config.seed or 0
        )
        try:
            _drive(config, fleet, submitter, report, say)
        finally:
            stop_attacks.set()
            for thread in attackers:
                thread.join(timeout=30)
        if deadlocks_before is not None:
            report.deadlocks = (fleet.pg_deadlocks() or 0) - deadlocks_before
            if report.deadlocks:
                report.violations.append(f"PostgreSQL counted {report.deadlocks} deadlocks")
        fleet.stop_processes()
        audit_attacks(report, fleet, log)
        report.acknowledged = submitter.acknowledged
        report.created = submitter.created
        report.replayed = submitter.replayed
        report.submit_retries = submitter.retries
        report.violations += submitter.refused
        audit(report, fleet, submitter.job_ids)
        keep = keep or not report.ok
        return report
    except BaseException:
        keep = True
        raise
    finally:
        fleet.stop_processes()
        if not config.keep:  # the logs may be kept below, but no database on a shared server
            fleet.drop_pg_database()
        if keep:
            say(f"logs and data kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def _drive(
    config: ChaosConfig,
    fleet: ChaosFleet,
    submitter: Submitter,
    report: ChaosReport,
    say: Callable[[str], None],
) -> None:
    """The chaos loop: until every job in the database is final and every submit answered."""
    rng = random.Random(config.seed)
    counts = StatusCounts(fleet.audit_url)
    triggers = list(zip(config.restart_triggers(), config.restart_signals, strict=True))
    outage_pending = config.backend == "postgresql"
    outage_end: float | None = None
    outage_started = 0.0

    def next_gap() -> float:
        return rng.expovariate(1.0 / config.kill_every) if config.kill_every > 0 else math.inf

    start = time.monotonic()
    next_kill = start + next_gap()
    next_line = start
    submitter.start()
    try:
        while True:
            now = time.monotonic()
            status = counts.read()
            total = sum(status.values())
            final = sum(status.get(s, 0) for s in FINAL_STATUSES)
            succeeded = status.get("succeeded", 0)
            if not submitter.is_alive() and total == final and total >= submitter.acknowledged:
                break
            if now - start > config.timeout:
                report.timed_out = True
                report.violations.append(
                    f"timed out after {config.timeout:.0f} s with {total - final} jobs not final"
                )
                break
            fleet.check_orchestrator()
            fleet.replace_exited_workers()
            if now >= next_kill and fleet.kill_worker(rng) is not None:
                report.kills += 1
                next_kill = now + next_gap()
            if triggers:
                (what, fraction), sig = triggers[0]
                reached = submitter.acknowledged if what == "submitted" else succeeded
                if reached >= fraction * config.jobs:
                    triggers.pop(0)
                    say(f"{now - start:6.1f}s  restarting the orchestrator with {sig.name}")
                    restart = fleet.restart_orchestrator(sig)
                    report.restarts.append(restart)
                    say(f"{time.monotonic() - start:6.1f}s  back after {restart.downtime:.1f} s")
            if outage_pending and succeeded >= DB_OUTAGE_AT * config.jobs:
                outage_pending = False
                if config.pg_outage == "proxy":
                    say(f"{now - start:6.1f}s  cutting the database connection")
                    fleet.cut_database()
                    outage_started = now
                    outage_end = now + config.pg_outage_seconds
                else:
                    say(f"{now - start:6.1f}s  restarting the PostgreSQL server")
                    took = fleet.restart_database_server()
                    report.db_outages.append(f"pg_ctlcluster restart, {took:.1f} s")
            if outage_end is not None and now >= outage_end:
                fleet.restore_database()
                report.db_outages.append(f"proxy cut for {now - outage_started:.1f} s")
                outage_end = None
                say(f"{now - start:6.1f}s  database connection restored")
            if now >= next_line:
                next_line = now + 5.0
                say(
                    f"{now - start:6.1f}s  acknowledged {submitter.acknowledged}/{config.jobs}  "
                    f"succeeded {succeeded}  running {status.get('running', 0)}  "
                    f"queued {status.get('queued', 0)}  kills {report.kills}  "
                    f"restarts {len(report.restarts)}  workers ready "
                    f"{len(fleet.ready_workers())}/{config.workers}"
                )
            time.sleep(0.25)
    finally:
        submitter.halt.set()
        submitter.join(timeout=15)
        if outage_end is not None:
            fleet.restore_database()
        counts.close()
    report.wall_seconds = time.monotonic() - start
