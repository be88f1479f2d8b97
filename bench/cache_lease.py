"""What a warm disk-cache lease costs: `ModelCache.lease` of a model already cached and checked,
as every job does for each model it uses before its pipeline runs.

The tiny SD 1.5-shaped demo model (a diffusers folder) is cached once, leased a few times to
warm up, then leased `--leases` times; CPU (process_time) and wall seconds per lease. The cost
is a folder walk and an index rewrite when the cache re-checks everything on each lease, a few
stats when it remembers what it checked.

    PYTHONPATH=$PWD .venv/bin/python bench/cache_lease.py --leases 200
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from imagefleet.demo_model import save_demo_model
from imagefleet.hashing import path_sha256
from imagefleet.worker.model_cache import ModelCache


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leases", type=int, default=200, help="Measured leases.")
    parser.add_argument("--rounds", type=int, default=3, help="Repeats; the median is shown.")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="imagefleet-bench-lease-") as tmp:
        source = save_demo_model(Path(tmp) / "sd15")
        sha256, size = path_sha256(source)
        cache = ModelCache(Path(tmp) / "cache")
        cache.ensure(str(source), sha256, size)
        for _ in range(5):
            cache.ensure(str(source), sha256, size)
        cpu_ms, wall_ms = [], []
        for _ in range(args.rounds):
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(args.leases):
                with cache.lease(str(source), sha256, size):
                    pass
            cpu_ms.append((time.process_time() - cpu) / args.leases * 1e3)
            wall_ms.append((time.perf_counter() - wall) / args.leases * 1e3)
    cpu_ms.sort()
    wall_ms.sort()
    print(
        f"warm lease of the demo model folder, {args.leases} leases x {args.rounds} rounds: "
        f"median {cpu_ms[len(cpu_ms) // 2]:.3f} ms CPU, {wall_ms[len(wall_ms) // 2]:.3f} ms wall "
        f"per lease (load average {os.getloadavg()[0]:.1f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
