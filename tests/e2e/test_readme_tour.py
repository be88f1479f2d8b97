"""The README's tour, as written: `imagefleet up`, then the command it suggests, in a fresh folder.

This is the first thing a newcomer runs. The fleet is the real one `up` starts (orchestrator
and worker processes, the demo model built on first start); the submit command is taken
verbatim from what `up` prints, so the hint and the tour cannot drift apart.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from imagefleet.cli.up import TOUR_COMMAND
from tests.harness.ports import free_port
from tests.harness.processes import child_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

HINT_PREFIX = "try:  "
UP_READY_SECONDS = 180.0
STOP_SECONDS = 40.0


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (Linux /proc): `up` starts its children in sessions of
    their own, so that a terminal's Ctrl-C reaches only `up`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


@pytest.fixture
def fleet_up(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """`imagefleet up` on a free port in an empty folder; yields its hint and environment."""
    env = child_env(HOME=str(tmp_path / "home"), XDG_DATA_HOME=str(tmp_path / "home" / "data"))
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "imagefleet", "up", "--port", str(free_port())],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    children: list[int] = []
    try:
        deadline = time.monotonic() + UP_READY_SECONDS
        while HINT_PREFIX not in log_path.read_text(errors="replace"):
            assert up.poll() is None, log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")
            time.sleep(0.2)
        children = _children(up.pid)
        text = log_path.read_text(errors="replace")
        hint = next(line for line in text.splitlines() if line.startswith(HINT_PREFIX))
        yield hint.removeprefix(HINT_PREFIX), env
    finally:
        children = children or _children(up.pid)
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert "Traceback" not in log_path.read_text(errors="replace")


def test_the_tour_command_that_up_suggests_makes_a_576x1024_image(
    tmp_path: Path, fleet_up: tuple[str, dict[str, str]]
) -> None:
    hint, env = fleet_up
    assert hint.startswith(TOUR_COMMAND + " --url http://127.0.0.1:")
    program, *args = shlex.split(hint)
    assert program == "imagefleet"

    tour = subprocess.run(
        [sys.executable, "-m", "imagefleet", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )

    assert tour.returncode == 0, tour.stdout + tour.stderr
    assert "Traceback" not in tour.stdout + tour.stderr
    written = re.search(r"wrote (out/(\w+)-0\.png) \(576x1024, seed \d+\)", tour.stdout)
    assert written, tour.stdout
    with Image.open(tmp_path / written.group(1)) as image:
        assert (image.format, image.size) == ("PNG", (576, 1024))
        assert "Sampler: DPM++ 2M, " in image.text["parameters"]  # type: ignore[attr-defined]

    url = args[args.index("--url") + 1]
    job = subprocess.run(
        [sys.executable, "-m", "imagefleet", "jobs", "get", written.group(2), "--url", url],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert job.stdout.startswith(f"job {written.group(2)}: succeeded, step 20/20, 1 attempt")
