"""Scheduling policies compared on the simulated fleet: the goals of issue 11, as ratios measured
in one run on one seeded workload.

- images per dollar of the model-aware policy over FIFO's (goal >= 1.5x) and over the 32-item
  look-ahead's (goal >= 1.15x);
- paid p95 wait against FIFO's (goal: no worse), over all paid jobs and over the paid jobs of
  clients that are not batch clients;
- the longest wait against the aging bound (goal: none longer);
- the heaviest batch client's effect on everybody else: the same workload without that
  client's jobs, and the other clients' p95 wait per tier with / without it (goal <= 1.2x);
- simulation speed: jobs simulated per second of CPU, and wall time for a run at `--speed-scale`
  times the default fleet and traffic (1,006,496 jobs on 130 GPUs at the default 3.25x, seed 1).

Usage: .venv/bin/python bench/scheduling.py [--hours 24] [--seed 1] [--speed-scale 3.25]
       [--config FILE] [--json out.json] [--chart out.png] [--skip-speed] [--speed-only]
       [--compiled]

`--compiled` runs everything on the mypyc-compiled simulator (`scripts/compile-simulator`
first; a stale build is refused): the same figures, faster. `--speed-only` runs only the speed
part.
Prints a table and markdown rows for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from imagefleet.scheduling.policies import POLICY_NAMES, make_policy
from imagefleet.scheduling.simulator.compare import describe
from imagefleet.scheduling.simulator.compiled import reexec_compiled, running_compiled
from imagefleet.scheduling.simulator.config import SimConfig, load_config
from imagefleet.scheduling.simulator.engine import simulate
from imagefleet.scheduling.simulator.metrics import RunResult
from imagefleet.scheduling.simulator.report import chart, table
from imagefleet.scheduling.simulator.workload import Workload, generate

OURS = "model-aware"


def timed(config: SimConfig, workload: Workload, name: str) -> tuple[RunResult, float, float]:
    policy = make_policy(name, config.policy_config())
    wall, cpu = time.perf_counter(), time.process_time()
    result = simulate(config, workload, policy)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def versus(a: float, b: float) -> str:
    return f"{a:,.1f} s / {b:,.1f} s = {ratio(a, b)}"


def others_p95(result: RunResult, batch_owners: tuple[str, ...]) -> dict[str, float]:
    """p95 wait per tier over every job but the batch clients'."""
    keep = [name for name in result.owner_names if name not in batch_owners]
    return result.owner_p95(keep)


def compare_goals(
    config: SimConfig,
    workload: Workload,
    results: dict[str, RunResult],
    goal: Callable[[str, str, str], None],
    console: Console,
) -> dict[str, dict[str, float]]:
    """The comparison's goals (`goal` records each line); returns the fairness ratios."""
    console.print(table(list(results.values()), title="All policies, same workload"))
    bound = config.policy_config().aging_bound_s
    ours, fifo, lookahead = results[OURS], results["fifo"], results["lookahead-32"]
    heaviest = workload.heaviest_batch_owner()
    batch = workload.batch_owners
    goal(
        "images/$ (busy GPU time) vs FIFO",
        ratio(ours.images_per_busy_dollar, fifo.images_per_busy_dollar),
        ">= 1.5x",
    )
    goal(
        "images/$ (busy GPU time) vs look-ahead 32",
        ratio(ours.images_per_busy_dollar, lookahead.images_per_busy_dollar),
        ">= 1.15x",
    )
    goal(
        "images/$ (whole fleet) vs FIFO",
        ratio(ours.images_per_dollar, fifo.images_per_dollar),
        ">= 1.5x",
    )
    goal(
        "images/$ (whole fleet) vs look-ahead 32",
        ratio(ours.images_per_dollar, lookahead.images_per_dollar),
        ">= 1.15x",
    )
    paid = "paid" if "paid" in ours.wait else next(iter(ours.wait))
    goal(
        f"{paid} p95 wait, all jobs: ours / FIFO",
        versus(ours.wait[paid].p95, fifo.wait[paid].p95),
        "<= 1x",
    )
    ours_other, fifo_other = others_p95(ours, batch), others_p95(fifo, batch)
    if paid in ours_other and paid in fifo_other:
        goal(
            f"{paid} p95 wait, non-batch clients: ours / FIFO",
            versus(ours_other[paid], fifo_other[paid]),
            "<= 1x",
        )
    goal("longest wait / aging bound", versus(ours.max_wait_s, bound), "<= 1x")
    longest_queue = max(stats.max for stats in ours.queue_wait.values())
    goal("longest queue wait / aging bound", versus(longest_queue, bound), "<= 1x")

    fairness: dict[str, dict[str, float]] = {}
    if heaviest is not None:
        without = workload.without_owner(heaviest)
        for name in (OURS, "fifo"):
            alone, _, _ = timed(config, without, name)
            with_p95, without_p95 = others_p95(results[name], batch), others_p95(alone, batch)
            fairness[name] = {}
            for tier in with_p95:
                if without_p95.get(tier):
                    fairness[name][tier] = with_p95[tier] / without_p95[tier]
                    goal(
                        f"{name}: other clients' {tier} p95 with / without {heaviest}",
                        versus(with_p95[tier], without_p95[tier]),
                        "<= 1.2x",
                    )
    return fairness


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--hours", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--speed-scale", type=float, default=3.25)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--speed-only", action="store_true")
    parser.add_argument("--compiled", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--chart", type=Path, default=None)
    args = parser.parse_args()
    if args.compiled:
        reexec_compiled()
    console = Console()
    console.print(
        f"simulator: {'compiled (mypyc)' if running_compiled() else 'pure Python'}; "
        f"load average {' / '.join(f'{v:.1f}' for v in os.getloadavg())}"
    )

    config = load_config(args.config)
    updates: dict[str, object] = {}
    if args.seed is not None:
        updates["seed"] = args.seed
    if args.hours is not None:
        updates["workload"] = config.workload.model_copy(update={"hours": args.hours})
    config = config.model_copy(update=updates)
    workload = generate(config)
    facts = describe(config, workload)
    console.print(
        f"workload: {facts['jobs']:,} jobs, {facts['images']:,} images over {facts['hours']:g} h, "
        f"offered load {facts['offered_load']:.1%}, {sum(facts['gpus'].values())} GPUs, "
        f"seed {config.seed}"
    )

    results: dict[str, RunResult] = {}
    speed: dict[str, tuple[float, float]] = {}
    for name in () if args.speed_only else POLICY_NAMES:
        result, wall, cpu = timed(config, workload, name)
        results[name] = result
        speed[name] = (wall, cpu)
        console.print(f"  {name}: {wall:.1f} s wall, {cpu:.1f} s CPU")
    lines: list[tuple[str, str, str]] = []

    def goal(label: str, value: str, target: str) -> None:
        lines.append((label, value, target))

    fairness: dict[str, dict[str, float]] = {}
    if not args.speed_only:
        fairness = compare_goals(config, workload, results, goal, console)
    speed_line = None
    if not args.skip_speed:
        big = config.model_copy(
            update={
                "fleet": config.fleet.model_copy(
                    update={
                        "gpus": [
                            gpu.model_copy(update={"count": round(gpu.count * args.speed_scale)})
                            for gpu in config.fleet.gpus
                        ]
                    }
                )
            }
        )
        start = time.perf_counter()
        big_workload = generate(big)
        generation = time.perf_counter() - start
        big_result, wall, cpu = timed(big, big_workload, OURS)
        speed_line = (big_workload.jobs, wall, cpu, big_result.gpus)
        goal(
            f"simulation speed ({'compiled' if running_compiled() else 'pure Python'}), "
            f"{OURS}, {big_workload.jobs:,} jobs on {big_result.gpus} GPUs",
            f"{wall:.1f} s wall, {cpu:.1f} s CPU (+ {generation:.1f} s generating the workload; "
            f"load average {os.getloadavg()[0]:.1f} after)",
            "< 60 s",
        )

    console.print()
    for label, value, target in lines:
        console.print(f"{label:<62} {value:<40} goal {target}")
    console.print()
    console.print(
        f"## rows for docs/benchmarks.md ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{platform.machine()}, Python {sys.version.split()[0]})"
    )
    console.print("| measure | value | goal |\n|---|---|---|")
    for label, value, target in lines:
        console.print(f"| {label} | {value} | {target} |")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "workload": facts,
                    "policies": [r.summary() for r in results.values()],
                    "goals": [{"measure": a, "value": b, "goal": c} for a, b, c in lines],
                    "fairness_ratio": fairness,
                    "speed_s": {name: {"wall": w, "cpu": c} for name, (w, c) in speed.items()},
                    "speed_run": None
                    if speed_line is None
                    else dict(zip(("jobs", "wall_s", "cpu_s", "gpus"), speed_line, strict=True)),
                },
                indent=2,
            )
            + "\n"
        )
    if args.chart is not None and results:
        title = (
            f"{facts['jobs']:,} jobs over {facts['hours']:g} h, load {facts['offered_load']:.0%}"
        )
        chart(list(results.values()), args.chart, title=title)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
