"""An optional py-spy profile of one server process during a throughput run, summarised by
package and by route handler."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.control_plane_lib.stack import (
    REPO,
    Bench,
)
from tests.harness.orchestrator import OrchestratorProcess


@dataclass
class Profile:
    process: subprocess.Popen[bytes]
    output: Path


PROFILE_BUCKETS = (
    ("sqlalchemy", "/sqlalchemy/"),
    ("psycopg", "/psycopg"),
    ("sqlite3", "sqlite3"),
    ("pydantic", "/pydantic"),
    ("fastapi", "/fastapi/"),
    ("starlette", "/starlette/"),
    ("uvicorn+h11", "/uvicorn/"),
    ("uvicorn+h11", "/h11/"),
    ("anyio (thread hand-off)", "/anyio/"),
    ("asyncio", "/asyncio/"),
    ("logging", "/logging/"),
    ("json", "/json/"),
    ("imagefleet", "/imagefleet/"),
    ("threading", "threading.py"),
)
# Frames counted inclusively in a profile: the route handlers and what they call into.
HANDLER_MODULES = (
    "orchestrator/routes_",
    "orchestrator/lifecycle.py",
    "orchestrator/auth.py",
    "orchestrator/views.py",
)


def start_profile(bench: Bench, server: OrchestratorProcess) -> Profile | None:
    """py-spy on one server process for the measured window: where its CPU goes."""
    spy = REPO / ".venv" / "bin" / "py-spy"
    if not spy.exists() or server.process is None:
        return None
    output = bench.scratch / "profile.txt"
    command = [str(spy), "record", "--nonblocking", "--gil", "--full-filenames", "-r", "200"]
    command += ["-f", "raw"]
    command += ["-d", str(int(bench.args.run_timeout)), "-o", str(output)]
    command += ["-p", str(server.process.pid)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bench.stack.callback(_stop_child, process)
    time.sleep(1.0)  # py-spy attaches
    return Profile(process, output)


def _stop_child(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def finish_profile(bench: Bench, profile: Profile) -> None:
    """Stops py-spy (it writes on SIGINT) and keeps a summary: samples holding the GIL by
    package of the innermost frame (self time), and by route handler (inclusive)."""
    _stop_child(profile.process)
    if not profile.output.exists():
        bench.profile_summary = ["py-spy wrote nothing (could not attach?)"]
        return
    if bench.args.profile_out:
        shutil.copyfile(profile.output, bench.args.profile_out)
    by_bucket: Counter[str] = Counter()
    by_handler: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    total = 0
    for line in profile.output.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        leaf = frames[-1]
        bucket = next((name for name, marker in PROFILE_BUCKETS if marker in leaf), "other")
        by_bucket[bucket] += count
        name, _, where = leaf.partition(" (")
        if name.strip():
            by_function[f"{name} ({where.rsplit('/', 1)[-1]}"] += count
        for frame in frames:
            if any(f"/imagefleet/{m}" in frame for m in HANDLER_MODULES):
                by_handler[frame.split(" (")[0]] += count
    summary = [f"{total} samples holding the GIL (200/s)"]
    summary += [
        f"self {name}: {100 * n / max(1, total):.0f}%" for name, n in by_bucket.most_common(8)
    ]
    summary += [
        f"incl. {name}: {100 * n / max(1, total):.0f}%" for name, n in by_handler.most_common(10)
    ]
    summary += [
        f"hot {name}: {100 * n / max(1, total):.1f}%" for name, n in by_function.most_common(8)
    ]
    bench.profile_summary = summary
