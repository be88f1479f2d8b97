"""A Python deployment's warm process, from the worker's side: started once per version
(deploy_child.py under the version's interpreter), `setup(models)` once, then one `run` per
job, over JSON lines on its stdin and stdout.

The process's environment is the worker's minus its secrets: every IMAGEFLEET_* variable
(the worker key among them) and any variable whose name says KEY, SECRET, TOKEN, PASSWORD or
CREDENTIAL is dropped, and PYTHONPATH with them, so user code never sees the worker's
credentials (docs/workflows.md, "Security model").
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

CHILD = Path(__file__).with_name("deploy_child.py")
SECRET_WORDS = ("KEY", "SECRET", "TOKEN", "PASSWORD", "CREDENTIAL")
POLL_SECONDS = 0.2
CANCEL_GRACE_SECONDS = 30.0  # a run that ignores context.cancelled() is killed after this
FINAL_EVENTS = frozenset({"setup_done", "done", "cancelled", "error"})


class PipelineFailed(RuntimeError):
    """setup or run raised, or the process died; `stage` says which."""

    def __init__(self, stage: str, message: str, details: str = "") -> None:
        super().__init__(message)
        self.stage = stage
        self.details = details


class PipelineCancelled(RuntimeError):
    """The run stopped because the job was cancelled (or the worker is stopping)."""


def scrubbed_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """What user code may see of the worker's environment."""
    kept = {
        name: value
        for name, value in environ.items()
        if not name.startswith("IMAGEFLEET_")
        and name != "PYTHONPATH"
        and not any(word in name.upper() for word in SECRET_WORDS)
    }
    kept.update(PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1", PYTHONNOUSERSITE="1")
    return kept


class PipelineProcess:
    """One warm process of one version; not thread-safe (one job at a time, as a worker)."""

    def __init__(self, python: str | None = None, preload: Sequence[str] = ()) -> None:
        self.python = python or sys.executable
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._process = subprocess.Popen(
            [self.python, str(CHILD), ",".join(preload)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=tempfile.gettempdir(),
            env=scrubbed_environment(os.environ),
            text=True,
            bufsize=1,
        )
        self.preloaded = False  # the child imported what it was told to, and waits for setup
        threading.Thread(target=self._read, daemon=True).start()

    @property
    def pid(self) -> int:
        return self._process.pid

    def alive(self) -> bool:
        return self._process.poll() is None

    def setup(self, package_dir: Path, models: Mapping[str, Any]) -> None:
        """Loads the package's pipeline.py and runs its setup(models); PipelineFailed("setup",
        ...) if either raises."""
        request = {"op": "setup", "package_dir": str(package_dir), "models": dict(models)}
        self._call(request, lambda step, total: None, lambda: False)

    def run(
        self,
        request: Mapping[str, Any],
        on_progress: Callable[[int, int], None],
        should_stop: Callable[[], bool],
    ) -> list[str] | None:
        """One job: the file names run returned (None: every file it wrote)."""
        event = self._call({"op": "run", **request}, on_progress, should_stop)
        outputs = event.get("outputs")
        return None if outputs is None else [str(name) for name in outputs]

    def close(self) -> None:
        if self._process.poll() is None:
            try:
                assert self._process.stdin is not None
                self._process.stdin.close()
                self._process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait()

    def _call(
        self,
        message: dict[str, Any],
        on_progress: Callable[[int, int], None],
        should_stop: Callable[[], bool],
    ) -> dict[str, Any]:
        stage = str(message["op"])
        self._send(message, stage)
        cancelled_at: float | None = None
        while True:
            # Checked at every event too: a run that reports progress often never lets the
            # queue stay empty for a whole poll.
            if cancelled_at is None and should_stop():
                cancelled_at = time.monotonic()
                self._send({"op": "cancel"}, stage)
            elif (
                cancelled_at is not None and time.monotonic() - cancelled_at > CANCEL_GRACE_SECONDS
            ):
                self._process.kill()
            try:
                event = self._events.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            if event is None:
                code = self._process.wait()
                if cancelled_at is not None:
                    raise PipelineCancelled("the run was cancelled (its process was stopped)")
                raise PipelineFailed(stage, f"the pipeline process exited (code {code})")
            kind = event.get("event")
            if kind == "progress":
                on_progress(int(event.get("step", 0)), int(event.get("total", 0)))
            elif kind == "cancelled":
                raise PipelineCancelled("the run stopped on context.cancelled()")
            elif kind == "error":
                raise PipelineFailed(
                    stage, str(event.get("message")), str(event.get("traceback", ""))
                )
            elif kind in FINAL_EVENTS:
                return event

    def _send(self, message: dict[str, Any], stage: str) -> None:
        try:
            assert self._process.stdin is not None
            self._process.stdin.write(json.dumps(message) + "\n")
            self._process.stdin.flush()
        except (OSError, ValueError) as exc:
            code = self._process.poll()
            raise PipelineFailed(stage, f"the pipeline process is gone (code {code})") from exc

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # not ours: the child moves user prints to stderr
            if event.get("event") == "preloaded":
                self.preloaded = True
            else:
                self._events.put(event)
        self._events.put(None)
