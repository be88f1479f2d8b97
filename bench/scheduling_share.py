"""The share a tier's head start covers (`PolicyConfig.head_start_jobs`), swept: for each value,
the model-aware policy on the bench's workload with and without its heaviest batch client, and
the issue 11 figures that rule moves (other clients' p95 per tier with / without that client,
paid p95, images per dollar, longest wait, idle share). FIFO's paid p95 is the bar for paid.

Usage: .venv/bin/python bench/scheduling_share.py [--values 0,4,8,12,16] [--hours 24] [--seed 1]

Each value is two model-aware runs (about 45 s of CPU for 24 h); the figures are deterministic.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench.*` when run as a script

from bench.scheduling import others_p95, timed
from imagefleet.scheduling.simulator.config import load_config
from imagefleet.scheduling.simulator.workload import generate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--values", default="0,4,8,12,16")
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    config = load_config(None)
    config = config.model_copy(
        update={
            "seed": args.seed,
            "workload": config.workload.model_copy(update={"hours": args.hours}),
        }
    )
    workload = generate(config)
    heaviest = workload.heaviest_batch_owner()
    if heaviest is None:
        raise SystemExit("the workload has no batch client")
    without = workload.without_owner(heaviest)
    batch = workload.batch_owners
    cpu = time.process_time()
    fifo, _, _ = timed(config, workload, "fifo")
    print(f"{workload.jobs:,} jobs, seed {args.seed}; FIFO paid p95 {fifo.wait['paid'].p95:.1f} s")
    print(
        f"| head_start_jobs | other paid p95 with / without {heaviest} | other free p95 | "
        "paid p95 (s) | images / $ (busy) | max wait (s) | idle |"
    )
    print("|---:|---|---|---:|---:|---:|---:|")
    for value in (float(v) for v in args.values.split(",")):
        run = config.model_copy(update={"policy": {**config.policy, "head_start_jobs": value}})
        ours, _, _ = timed(run, workload, "model-aware")
        alone, _, _ = timed(run, without, "model-aware")
        with_p95, without_p95 = others_p95(ours, batch), others_p95(alone, batch)
        ratios = [
            f"{with_p95[t]:,.1f} / {without_p95[t]:,.1f} = {with_p95[t] / without_p95[t]:.2f}x"
            for t in ("paid", "free")
        ]
        print(
            f"| {value:g} | {ratios[0]} | {ratios[1]} | {ours.wait['paid'].p95:,.1f} | "
            f"{ours.images_per_busy_dollar:,.1f} | {ours.max_wait_s:,.0f} | "
            f"{ours.time_split()['idle']:.1%} |",
            flush=True,
        )
    print(
        f"CPU {time.process_time() - cpu:.0f} s; load average "
        f"{' / '.join(f'{v:.1f}' for v in os.getloadavg())}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
