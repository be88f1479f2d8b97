"""Each goal of issue 16 as a verdict: met or missed by how much, with the reason the figures
give. Every goal is a same-run ratio or a count, so the machine's load mostly cancels out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.control_plane_lib.depth import DepthResult
from bench.control_plane_lib.stack import BACKENDS

if TYPE_CHECKING:
    from bench.control_plane_lib.report import Results

GOAL_BARE_RATIO = 0.5  # HTTP lifecycles/s over the bare-SQL floor's, same run and concurrency
GOAL_REPLICA_RATIO = 1.0  # 2 replicas over 1
GOAL_IDLE_RATIO = 2.0  # pickup p99 with 100 idle long-pollers over the p99 with none
GOAL_DEPTH_RATIO = 2.0  # claim latency at the deepest queue over the shallowest
GOAL_STATEMENTS = 12.0  # SQL statements per lifecycle over HTTP
GOAL_TRANSACTIONS = 5.0


@dataclass
class Verdict:
    measure: str
    value: str
    goal: str
    verdict: str
    why: str


def _at_least(value: float, goal: float) -> str:
    return "met" if value >= goal else f"missed: {goal / max(1e-9, value):.1f}x short"


def _at_most(value: float, goal: float) -> str:
    return "met" if value <= goal else f"missed: {value / goal:.1f}x over"


def verdicts(results: Results) -> list[Verdict]:
    found: list[Verdict] = []
    for backend in BACKENDS:
        runs = [r for r in results.throughput if r.backend == backend and r.completed]
        rated = [r for r in runs if r.bare_ratio is not None]
        if rated:
            best = max(rated, key=lambda r: r.bare_ratio or 0.0)
            ratio = best.bare_ratio or 0.0
            bare = best.bare.per_second if best.bare else 0.0
            found.append(
                Verdict(
                    f"{backend}: HTTP lifecycles/s ÷ bare-SQL floor (best of replicas)",
                    f"{ratio:.3f} ({best.per_second:.0f}/s vs {bare:.0f}/s, "
                    f"{best.replicas} replica(s))",
                    f">= {GOAL_BARE_RATIO}",
                    _at_least(ratio, GOAL_BARE_RATIO),
                    f"{best.cpu_ms['server']:.1f} ms of server CPU per lifecycle "
                    f"({best.statements:.1f} SQL statements in {best.transactions:.1f} "
                    f"transactions, 5 HTTP requests) against 3 transactions and no Python "
                    f"server for the bare floor; the simulated clients used "
                    f"{best.cpu_ms['clients']:.1f} ms per lifecycle on the same cores",
                )
            )
        one = next((r for r in runs if r.replicas == 1), None)
        two = next((r for r in runs if r.replicas == 2), None)
        if one and two and one.per_second:
            ratio = two.per_second / one.per_second
            found.append(
                Verdict(
                    f"{backend}: 2 replicas ÷ 1",
                    f"{ratio:.2f} ({two.per_second:.0f} vs {one.per_second:.0f}/s)",
                    f">= {GOAL_REPLICA_RATIO}",
                    _at_least(ratio, GOAL_REPLICA_RATIO),
                    f"server CPU per lifecycle {one.cpu_ms['server']:.1f} ms with one replica, "
                    f"{two.cpu_ms['server']:.1f} ms with two, on the same cores",
                )
            )
        if one:
            over = max(one.statements / GOAL_STATEMENTS, one.transactions / GOAL_TRANSACTIONS)
            found.append(
                Verdict(
                    f"{backend}: SQL statements / transactions per lifecycle (1 replica)",
                    f"{one.statements:.1f} / {one.transactions:.1f}",
                    f"<= {GOAL_STATEMENTS:.0f} / {GOAL_TRANSACTIONS:.0f}",
                    _at_most(over, 1.0),
                    "counted inside the server processes (SQLAlchemy events), long-poll "
                    "re-checks included",
                )
            )
        baseline = next(
            (r for r in results.idle if r.backend == backend and not r.idle_workers), None
        )
        for r in results.idle:
            if r.backend != backend or not r.idle_workers or baseline is None:
                continue
            ratio = r.dispatch_p99_ms / max(1e-9, baseline.dispatch_p99_ms)
            found.append(
                Verdict(
                    f"{backend}: pickup p99 with {r.idle_workers} idle workers ({r.variant}) "
                    "÷ with none",
                    f"{ratio:.2f} ({r.dispatch_p99_ms:.1f} vs {baseline.dispatch_p99_ms:.1f} ms)",
                    f"<= {GOAL_IDLE_RATIO:.0f}",
                    _at_most(ratio, GOAL_IDLE_RATIO),
                    f"the server ran {r.transactions_per_job:.1f} transactions per job "
                    f"({baseline.transactions_per_job:.1f} with none) at {r.rate:g} jobs/s; "
                    f"submit p50 {r.submit_p50_ms:.0f} ms ({baseline.submit_p50_ms:.0f} ms); "
                    f"queued by the server's clock p99 {r.server_wait_p99_ms:.0f} ms",
                )
            )
        levels = sorted((r for r in results.depth if r.backend == backend), key=lambda r: r.depth)
        if len(levels) >= 2:
            low, high = levels[0], levels[-1]
            ratio = high.claim_p50_ms / low.claim_p50_ms
            ratio99 = high.claim_p99_ms / low.claim_p99_ms
            found.append(
                Verdict(
                    f"{backend}: claim latency at {high.depth:,} vs {low.depth:,} queued",
                    f"p50 {ratio:.2f}x, p99 {ratio99:.2f}x",
                    f"<= {GOAL_DEPTH_RATIO:.0f}x",
                    _at_most(ratio, GOAL_DEPTH_RATIO),
                    _depth_reason(levels),
                )
            )
    return found


def _depth_reason(levels: list[DepthResult]) -> str:
    """Why claim latency does or does not stay flat, from the candidate query's plans."""
    if not all(r.uses_queue_index for r in levels):
        return "the candidate query does NOT use ix_jobs_queue at some depth"
    sorting = [r for r in levels if "TEMP B-TREE" in r.plan or "Sort" in r.plan]
    times = ", ".join(f"{r.candidate_query_ms:.2f} ms at {r.depth:,}" for r in levels)
    if sorting:
        return (
            "the candidate query finds queued jobs through ix_jobs_queue but sorts all of them "
            "on every claim (the plan shows a sort: the index does not give the queue order), "
            f"so a claim costs O(queued jobs): the query alone takes {times}"
        )
    return f"the candidate query walks ix_jobs_queue in queue order and stops early ({times})"
