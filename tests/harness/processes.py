"""Child processes started the way a user starts them (`python -m imagefleet ...`), each with its
output in a log file, and the CLI run to its end.

Every ManagedProcess still running when the interpreter exits (a Ctrl-C that skipped a fixture's
teardown or a benchmark's clean-up) is stopped then, newest first, so that an interrupted run
never leaves workers burning the CPU.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 60.0
STOP_GRACE_SECONDS = 8.0
LOG_TAIL_CHARS = 6000
EXIT_GRACE_SECONDS = 3.0

_LIVE: list[ManagedProcess] = []


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child: the caller's without stray IMAGEFLEET_* settings from its
    shell, unbuffered output (log lines reach the file as they happen), no model hub."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEFLEET_")}
    return {**env, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", **extra}


def python_path(*first: str | Path) -> str:
    """A PYTHONPATH with `first` ahead of the caller's own."""
    parts = [str(path) for path in first]
    if os.environ.get("PYTHONPATH"):
        parts.append(os.environ["PYTHONPATH"])
    return os.pathsep.join(parts)


class CommandFailed(RuntimeError):
    """An `imagefleet` command exited non-zero; the message holds its output."""


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300.0) -> str:
    """Runs one `python -m imagefleet` command to its end and returns its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "imagefleet", *args],
        env=child_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise CommandFailed(
            f"imagefleet {' '.join(args)} exited with {done.returncode}:\n"
            f"{done.stdout}\n{done.stderr}"
        )
    return done.stdout


class ManagedProcess:
    """One child process with its stdout and stderr appended to a log file.

    With `own_session`, the child leads its own process group and session: a terminal's Ctrl-C
    then reaches only the parent (which stops its children in order), and signals go to the
    child's group, never anything else.
    """

    def __init__(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        log_path: Path,
        *,
        own_session: bool = False,
    ) -> None:
        self.name = name
        self.log_path = log_path
        self.own_session = own_session
        self._log_file = log_path.open("ab")
        self.spawned = time.monotonic()
        self.popen = subprocess.Popen(
            args,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=own_session,
        )
        _LIVE.append(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        return self.log()[-chars:]

    def wait_for_log(self, text: str, timeout: float = STARTUP_TIMEOUT) -> None:
        """Waits until `text` appears in the log; fails early if the process exits first."""
        wait_until(lambda: text in self.log(), self, timeout, f"logging {text!r}")

    def send(self, sig: signal.Signals) -> None:
        """Signals the child (its whole group with `own_session`) if it still runs."""
        if not self.running:
            return
        with contextlib.suppress(ProcessLookupError):
            if self.own_session:
                os.killpg(self.popen.pid, sig)
            else:
                self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """The exit code; subprocess.TimeoutExpired if it is still running after `timeout`."""
        code = self.popen.wait(timeout=timeout)
        self._forget()
        return code

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> bool:
        """SIGTERM, then SIGKILL if it has not exited after `grace` seconds. True when SIGTERM
        was enough."""
        self.send(signal.SIGTERM)
        try:
            self.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()
            return False
        return True

    def kill(self) -> None:
        self.send(signal.SIGKILL)
        self.popen.wait()
        self._forget()

    def _forget(self) -> None:
        if self in _LIVE:
            _LIVE.remove(self)
        if not self._log_file.closed:
            self._log_file.close()


def wait_until(
    ready: Callable[[], bool], process: ManagedProcess, timeout: float, what: str
) -> None:
    """Polls `ready` until it holds; raises if `process` exits first or time runs out, with the
    tail of its log."""
    deadline = time.monotonic() + timeout
    while not ready():
        if not process.running:
            raise RuntimeError(
                f"{process.name} exited with {process.returncode} before {what}:\n"
                f"{process.log_tail()}"
            )
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{process.name} was not done {what} within {timeout}s:\n{process.log_tail()}"
            )
        time.sleep(0.1)


def stop_all(grace: float = EXIT_GRACE_SECONDS) -> None:
    """Stops every process still running, newest first: workers before the orchestrator they
    talk to, so each can hand its job back on the way out."""
    for process in reversed(list(_LIVE)):
        process.stop(grace)


atexit.register(stop_all)
