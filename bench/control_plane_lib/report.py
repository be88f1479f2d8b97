"""The tables, the verdicts against the issue's goals, and the docs/benchmarks.md section."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from bench.common.report import fmt, table
from bench.control_plane_lib.backlog import BacklogResult, backlog_table
from bench.control_plane_lib.depth import DepthResult
from bench.control_plane_lib.floor import FloorResult
from bench.control_plane_lib.goals import verdicts
from bench.control_plane_lib.idle import IdleResult
from bench.control_plane_lib.stack import (
    DOCS,
    SECTION,
    Bench,
)
from bench.control_plane_lib.throughput import ThroughputResult


@dataclass
class Results:
    throughput: list[ThroughputResult] = field(default_factory=list)
    floor: list[FloorResult] = field(default_factory=list)
    idle: list[IdleResult] = field(default_factory=list)
    depth: list[DepthResult] = field(default_factory=list)
    backlog: list[BacklogResult] = field(default_factory=list)


def throughput_table(results: Results) -> str:
    floors = {f.backend: f for f in results.floor if f.variant == "lifecycle"}
    rows = []
    for r in results.throughput:
        floor = floors.get(r.backend)
        ratio = f"{r.per_second / floor.per_second:.2f}" if floor and floor.per_second else "-"
        cpu = r.cpu_ms
        rows.append(
            [
                r.backend,
                str(r.replicas),
                f"{r.completed}/{r.jobs}",
                fmt(r.per_second),
                fmt(r.bare.per_second) if r.bare else "-",
                fmt(r.bare_ratio, 3) if r.bare_ratio is not None else "-",
                ratio,
                fmt(r.claim_p50_ms),
                fmt(r.claim_p99_ms),
                f"{100 * r.following_share:.0f}%",
                str(r.errors),
                fmt(r.statements),
                fmt(r.transactions),
                fmt(r.connects, 2),
                f"{cpu['server']:.1f} / {cpu['postgres']:.1f} / {cpu['clients']:.1f} / "
                f"{cpu['other']:.1f}",
                f"{100 * r.machine_busy:.0f}%",
                fmt(r.load, 2),
            ]
        )
    return table(
        [
            "backend",
            "replicas",
            "done",
            "lifecycles/s",
            "bare SQL/s",
            "÷ bare SQL",
            "÷ floor",
            "claim p50 ms",
            "claim p99 ms",
            "jobs via completions",
            "errors",
            "SQL stmts/job",
            "txns/job",
            "new conns/job",
            "CPU ms/job: server / pg / clients / other",
            "CPU busy",
            "load",
        ],
        rows,
    )


def floor_table(results: Results) -> str:
    rows = [
        [
            f.backend,
            f.variant,
            str(f.lifecycles),
            fmt(f.per_second),
            fmt(f.claim_p50_ms, 2),
            fmt(f.statements),
            fmt(f.transactions),
            fmt(f.checkouts),
            ", ".join(f"{k} {v:.0f}" for k, v in f.per_step.items()),
            " / ".join(f"{f.cpu_ms[k]:.1f}" for k in ("python", "postgres", "other")),
            fmt(f.load, 2),
        ]
        for f in results.floor
    ]
    return table(
        [
            "backend",
            "floor",
            "lifecycles",
            "lifecycles/s",
            "claim p50 ms",
            "SQL stmts/job",
            "txns/job",
            "pool checkouts/job",
            "statements by step",
            "CPU ms/job: python / pg / other",
            "load",
        ],
        rows,
    )


def idle_table(results: Results) -> str:
    rows = [
        [
            r.backend,
            f"{r.idle_workers} ({r.variant})",
            f"{r.rate:g}",
            f"{r.dispatched}/{r.submitted}",
            fmt(r.dispatch_p50_ms),
            fmt(r.dispatch_p99_ms),
            fmt(r.dispatch_max_ms),
            f"{fmt(r.server_wait_p50_ms)} / {fmt(r.server_wait_p99_ms)}",
            fmt(r.submit_p50_ms),
            fmt(r.transactions_per_job),
            fmt(r.statements_per_job),
            f"{100 * r.server_cpu:.0f}%",
            f"{100 * r.clients_cpu:.0f}%",
            str(r.errors),
            fmt(r.load, 2),
        ]
        for r in results.idle
    ]
    return table(
        [
            "backend",
            "idle workers",
            "jobs/s",
            "dispatched",
            "wait p50 ms",
            "wait p99 ms",
            "wait max ms",
            "queued p50 / p99 ms (db)",
            "submit p50 ms",
            "server txns/job",
            "SQL stmts/job",
            "server CPU",
            "clients CPU",
            "errors",
            "load",
        ],
        rows,
    )


def depth_table(results: Results) -> str:
    rows = [
        [
            r.backend,
            fmt(r.depth),
            fmt(r.fill_seconds),
            str(r.claims),
            fmt(r.claim_p50_ms),
            fmt(r.claim_p99_ms),
            fmt(r.candidate_query_ms, 2),
            fmt(r.submit_p50_ms),
            "yes" if r.uses_queue_index else "NO",
            str(r.errors),
            fmt(r.load, 2),
        ]
        for r in results.depth
    ]
    return table(
        [
            "backend",
            "queued",
            "fill s",
            "claims",
            "claim p50 ms",
            "claim p99 ms",
            "candidate query ms",
            "submit p50 ms",
            "ix_jobs_queue",
            "errors",
            "load",
        ],
        rows,
    )


def _db_cpu_ms(floor: FloorResult) -> float:
    """CPU per lifecycle of the floor's database work: Python plus its PostgreSQL backend."""
    return floor.cpu_ms["python"] + floor.cpu_ms["postgres"]


def summary_table(results: Results) -> str:
    """The goals, then the floor and the HTTP/floor ratios. Wall-clock ratios move with the
    machine's load (the floor and the HTTP runs happen minutes apart); the CPU ratio, HTTP
    server + PostgreSQL CPU per lifecycle over the floor's with the same reads, does not."""
    rows = [[v.measure, v.value, v.goal, v.verdict] for v in verdicts(results)]
    for f in results.floor:
        rows.append(
            [
                f"floor {f.backend} ({f.variant})",
                f"{f.per_second:.0f} lifecycles/s; {1000 / max(1e-9, _db_cpu_ms(f)):.0f} per "
                "CPU-second",
                "",
                "",
            ]
        )
    for r in results.throughput:
        floor = next(
            (f for f in results.floor if f.backend == r.backend and f.variant == "lifecycle"), None
        )
        if floor:
            rows.append(
                [
                    f"HTTP ÷ floor (wall clock), {r.backend}, {r.replicas} replica(s)",
                    f"{r.per_second / floor.per_second:.2f}",
                    "",
                    "",
                ]
            )
        reads = next(
            (f for f in results.floor if f.backend == r.backend and f.variant != "lifecycle"),
            None,
        )
        if reads:
            http_cpu = r.cpu_ms["server"] + r.cpu_ms["postgres"]
            rows.append(
                [
                    f"CPU per lifecycle, HTTP ÷ floor with the same reads, {r.backend}, "
                    f"{r.replicas} replica(s)",
                    f"{http_cpu / max(1e-9, _db_cpu_ms(reads)):.1f}x ({http_cpu:.1f} vs "
                    f"{_db_cpu_ms(reads):.1f} ms)",
                    "",
                    "",
                ]
            )
    return table(["measure", "value", "goal", "verdict"], rows)


def report(results: Results, bench: Bench) -> str:
    parts = []
    if results.throughput:
        parts += ["### Throughput over HTTP", "", throughput_table(results), ""]
    if results.floor:
        parts += ["### Floor: the same lifecycle in-process, no HTTP", "", floor_table(results), ""]
    if results.idle:
        parts += ["### Claims while workers idle in long polls", "", idle_table(results), ""]
    if results.backlog:
        parts += ["### Draining a backlog", "", backlog_table(results.backlog), ""]
    if results.depth:
        parts += ["### Claim latency against a deep queue", "", depth_table(results), ""]
        for r in results.depth:
            parts.append(f"- {r.backend}, {r.depth:,} queued: `{r.plan[:400]}`")
        parts.append("")
    if verdicts(results) or results.floor:
        parts += ["### Summary", "", summary_table(results), ""]
        for v in verdicts(results):
            parts.append(f"- **{v.measure}**: {v.verdict}. {v.why}.")
        parts.append("")
    if bench.profile_summary:
        parts += ["### Server profile (py-spy, PostgreSQL, 1 replica, throughput run)", ""]
        parts += [f"- {line}" for line in bench.profile_summary]
        parts.append("")
    return "\n".join(parts)


def docs_section(results: Results, bench: Bench, context: dict[str, str]) -> str:
    header = [
        SECTION,
        "",
        "Written by `bench/control_plane.py`; numbers from the run below. Simulated workers",
        "claim, heartbeat once and complete at once with their 1-pixel PNG inside the complete",
        "call (`complete-inline`, as the real worker sends small outputs; no GPU), their next",
        "claim sent with it (`next`, as the real worker sends it: a job it hands out needs no",
        'claim call; "jobs via completions" is their share, and claim latency is the claim',
        "calls' alone); submitters",
        "and workers run in the benchmark process, on the same machine as the servers and",
        "PostgreSQL, so the clients' CPU is shown apart. SQLite is the single-machine default;",
        'its "2 replicas" are two server processes on the same database file. The floor runs',
        'the same `JobLifecycle` calls in one thread with no HTTP; "+ HTTP-path reads" adds',
        "the reads the routes make around them (API-key lookup per request and so on). SQL",
        "statements and transactions are counted inside the server processes (BEGIN and",
        "COMMIT not included in statements; on PostgreSQL each transaction also costs a",
        "pool pre-ping, BEGIN and COMMIT round trip). Claim latency in the throughput and",
        "depth parts is the claim request's round trip, for claims that got a job (in the",
        "throughput part it includes long-poll waits whenever the queue ran dry). In the idle",
        'part, "wait" is how long a job waited for a worker: from its submit being sent to a',
        "claim's answer carrying it (the workers are idle, waiting in long polls, so this is",
        "how fast the fleet picks up new work; it includes the submit's own handling);",
        "\"queued (db)\" is the server's view: the claim's start minus the submit's start",
        "(started_at - created_at), which no client-side delay inflates. The backlog part",
        "queues its jobs first and times the workers' side alone (claim, heartbeat,",
        "complete), each way of claiming on a backlog of its own, on one server. The bare-SQL",
        "floor (bench/control_plane_lib/bare.py) runs right before each HTTP run on the same",
        "database with one connection per simulated client (workers + submitters): its own",
        "small table, 3 transactions per job (insert; claim with one conditional UPDATE,",
        'SKIP LOCKED on PostgreSQL; complete), no HTTP and no ORM. "÷ bare SQL" is the',
        "headline: the same-run ratio moves less with the machine's load than either figure.",
        "",
        f"- command: `{context['command']}`",
        f"- date: {context['date']}",
        f"- machine: {context['cpu']}, {os.cpu_count()} cores; {context['postgres']}",
        f"- load average at start: {context['load']} ({context['quiet']})",
        "",
    ]
    return "\n".join(header) + "\n" + report(results, bench)


NOTES = "### Notes"


def write_docs(section: str) -> None:
    """Puts the section into docs/benchmarks.md: replaces an earlier "## Control plane"
    section in place, or appends it; the rest of the file belongs to others and is read again
    right before writing so that their concurrent changes survive. A hand-written "### Notes"
    subsection at the end of the old section (analysis, fixes tried) is kept."""
    section = section.rstrip() + "\n"
    current = DOCS.read_text() if DOCS.exists() else ""
    if not current:
        DOCS.write_text("# Benchmarks\n\n" + section)
        return
    start = current.find(SECTION + "\n")
    if start == -1:
        DOCS.write_text(current.rstrip() + "\n\n" + section)
        return
    end = current.find("\n## ", start + len(SECTION))
    old = current[start : end + 1] if end != -1 else current[start:]
    rest = current[end + 1 :] if end != -1 else ""
    notes = old.find("\n" + NOTES)
    if notes != -1:
        section += old[notes:].rstrip() + "\n"
    DOCS.write_text(current[:start] + section + ("\n" + rest if rest else ""))
