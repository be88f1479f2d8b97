"""A real orchestrator: `python -m imagefleet serve` on 127.0.0.1, waited for until /healthz
answers, stoppable and restartable (each run logs to a file of its own)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx

from tests.harness.ports import free_port
from tests.harness.processes import STARTUP_TIMEOUT, STOP_GRACE_SECONDS, ManagedProcess
from tests.harness.processes import child_env as default_env

PORT_TRIES = 3


class OrchestratorUnavailable(RuntimeError):
    """The orchestrator did not become healthy; the message ends with its log."""


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200
    except httpx.TransportError:
        return False


class OrchestratorProcess:
    """`imagefleet serve` with its output in `logs/<name>-<run>.log`.

    With a `port`, every run (a restart included) binds that port, retrying while the last run's
    socket is still held; without one, each start picks a free port and tries another if that
    one was taken meanwhile. `data_dir` becomes `--data-dir`; everything else is in `env` (by
    default the caller's environment less its IMAGEFLEET_* settings).
    """

    def __init__(
        self,
        logs: Path,
        *,
        env: dict[str, str] | None = None,
        data_dir: Path | None = None,
        port: int | None = None,
        processes: int = 1,
        name: str = "orchestrator",
        own_session: bool = False,
    ) -> None:
        self.logs = logs
        self.env = default_env() if env is None else env
        self.data_dir = data_dir
        self.fixed_port = port
        self.port = port or 0
        self.processes = processes
        self.name = name
        self.own_session = own_session
        self.process: ManagedProcess | None = None
        self.runs = 0
        self.log_paths: list[Path] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def start(self, timeout: float = STARTUP_TIMEOUT) -> OrchestratorProcess:
        """Starts a run and waits until it is healthy; raises OrchestratorUnavailable."""
        self.logs.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        tries = 0
        while True:
            tries += 1
            self.port = self.fixed_port or free_port()
            process = self._spawn()
            while process.running and time.monotonic() < deadline:
                if healthy(self.url):
                    return self
                time.sleep(0.05)
            process.stop()
            taken = "address already in use" in process.log().lower()
            retry = time.monotonic() < deadline if self.fixed_port else tries < PORT_TRIES
            if not (taken and retry):
                raise OrchestratorUnavailable(
                    f"{process.name} did not become healthy at {self.url}:\n{process.log_tail()}"
                )
            time.sleep(0.5 if self.fixed_port else 0.0)

    def _spawn(self) -> ManagedProcess:
        run = self.runs
        self.runs += 1
        log_path = self.logs / f"{self.name}-{run}.log"
        self.log_paths.append(log_path)
        args = ["-m", "imagefleet", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        if self.processes != 1:
            args += ["--processes", str(self.processes)]
        if self.data_dir is not None:
            args += ["--data-dir", str(self.data_dir)]
        self.process = ManagedProcess(
            f"{self.name}-{run}",
            [sys.executable, *args],
            self.env,
            log_path,
            own_session=self.own_session,
        )
        return self.process

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> bool:
        """SIGTERM, SIGKILL after `grace`; True when SIGTERM was enough (or nothing ran)."""
        return self.process.stop(grace) if self.process is not None else True

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def log(self) -> str:
        """The current run's log."""
        return self.process.log() if self.process else ""


def pg_replicas(
    database_url: str, folder: Path, count: int = 2, **settings: str
) -> list[OrchestratorProcess]:
    """`count` replicas (not started) of one PostgreSQL-backed orchestrator, each with its own
    data folder, rate limiting off and 120 s leases unless `settings` (IMAGEFLEET_* variables)
    say otherwise."""
    env = {
        "IMAGEFLEET_DATABASE_URL": database_url,
        "IMAGEFLEET_LEASE_SECONDS": "120",
        "IMAGEFLEET_RATE_LIMIT_PER_SECOND": "0",
        **settings,
    }
    return [
        OrchestratorProcess(
            folder / f"replica-{i}", env=default_env(**env), data_dir=folder / f"replica-{i}"
        )
        for i in range(count)
    ]
