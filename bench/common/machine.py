"""The machine a benchmark runs on, as the figures in docs/benchmarks.md record it, and how
busy it is."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import time
from pathlib import Path

from bench.common.report import say


def cpu_model() -> str:
    """`lscpu | grep 'Model name'`, without the label."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    for line in out.splitlines():
        if line.startswith("Model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f", {int(line.split()[1]) / (1 << 20):.0f} GiB RAM"
    return (
        f"{cpu}, {os.cpu_count()} cores{memory}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def utc_date() -> str:
    done = subprocess.run(["date", "-u"], capture_output=True, text=True, check=False)
    return done.stdout.strip() or time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime())


def wait_for_quiet(max_seconds: float, threshold: float = 1.0) -> tuple[float, float]:
    """Waits (bounded) until the 1-minute load average drops under `threshold`, because other
    processes on this small machine take CPU from the servers and skew every figure. Returns
    (load when measuring starts, seconds waited)."""
    started = time.monotonic()
    load = os.getloadavg()[0]
    if load >= threshold and max_seconds > 0:
        say(f"load average {load:.2f} >= {threshold}: waiting up to {max_seconds:.0f}s for quiet")
    while load >= threshold and time.monotonic() - started < max_seconds:
        time.sleep(min(5.0, max(0.1, max_seconds - (time.monotonic() - started))))
        load = os.getloadavg()[0]
    return load, time.monotonic() - started
