"""A fleet on this machine: one orchestrator process and any number of worker processes, and
the data folder they start from (the demo model and keys, made with the CLI as an operator
would). The e2e tests and the benchmarks build on it; each adds its own ways to look inside or
to break things.

Each worker gets its own node id: the scheduler never gives a job back to a node where it
failed, and several processes on one machine stand here for several machines.
"""

from __future__ import annotations

import itertools
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.harness.orchestrator import OrchestratorProcess
from tests.harness.processes import (
    STARTUP_TIMEOUT,
    STOP_GRACE_SECONDS,
    ManagedProcess,
    child_env,
    run_cli,
)

# A worker logs it right before its first claim.
WORKER_READY_LINE = "pulling from"


def create_demo_model(data_dir: Path, env: dict[str, str] | None = None) -> None:
    """`imagefleet models create-demo`: builds and registers the tiny demo model."""
    run_cli("models", "create-demo", "--data-dir", str(data_dir), env=env)


def create_key(data_dir: Path, name: str, scope: str, env: dict[str, str] | None = None) -> str:
    """`imagefleet keys create`, which prints the token alone on its last line."""
    output = run_cli(
        "keys", "create", "--name", name, "--scope", scope, "--data-dir", str(data_dir), env=env
    )
    return output.strip().splitlines()[-1]


class WorkerProcess(ManagedProcess):
    """An `imagefleet worker` process that knows its node and when it first claimed."""

    def __init__(
        self,
        name: str,
        node_id: str,
        args: list[str],
        env: dict[str, str],
        log_path: Path,
        *,
        own_session: bool = False,
    ) -> None:
        super().__init__(name, args, env, log_path, own_session=own_session)
        self.node_id = node_id
        self.ready_after: float | None = None  # seconds from spawn to the first claim

    def check_ready(self) -> bool:
        """Whether it has started claiming (it logs so right before its first claim)."""
        if self.ready_after is None and WORKER_READY_LINE in self.log():
            self.ready_after = time.monotonic() - self.spawned
        return self.ready_after is not None


def wait_ready(workers: list[WorkerProcess], timeout: float) -> None:
    """Waits until every worker claims; raises RuntimeError (with its log) for one that exits
    first, TimeoutError when time runs out."""
    deadline = time.monotonic() + timeout
    while not all(worker.check_ready() for worker in workers):
        for worker in workers:
            if not worker.running:
                raise RuntimeError(
                    f"{worker.name} exited with {worker.returncode} before its first claim:\n"
                    f"{worker.log_tail()}"
                )
        if time.monotonic() > deadline:
            late = [w.name for w in workers if not w.check_ready()]
            raise TimeoutError(f"workers {late} did not start claiming within {timeout:.0f}s")
        time.sleep(0.1)


class Fleet:
    """An orchestrator plus worker processes, all logging under `root`.

    Workers get `--node-id <node_prefix>-<n>` and, unless `cache_dir` names one shared cache
    (as on a real multi-GPU machine), a cache folder each. `worker_env` is added to the
    environment of workers started from then on; `worker_args` to their command line.
    `torch_threads` (None: torch's own default) is each worker's OMP_NUM_THREADS.
    """

    def __init__(
        self,
        root: Path,
        orchestrator: OrchestratorProcess,
        worker_key: str,
        *,
        node_prefix: str = "node",
        cache_dir: Path | None = None,
        claim_wait: float = 2.0,
        worker_args: list[str] | None = None,
        worker_env: dict[str, str] | None = None,
        numbers: Iterator[int] | None = None,
        own_session: bool = False,
        torch_threads: int | None = 1,
    ) -> None:
        self.root = root
        self.orchestrator = orchestrator
        self.worker_key = worker_key
        self.node_prefix = node_prefix
        self.cache_dir = cache_dir
        self.claim_wait = claim_wait
        self.worker_args = worker_args or []
        # One torch thread per worker by default: several workers and the orchestrator share
        # few cores, and torch's default of a thread per core oversubscribes them.
        threads = {} if torch_threads is None else {"OMP_NUM_THREADS": str(torch_threads)}
        self.worker_env = {**threads, **(worker_env or {})}
        self.own_session = own_session
        self.workers: list[WorkerProcess] = []
        self.gone: list[WorkerProcess] = []  # killed, stopped or exited
        self._numbers = numbers if numbers is not None else itertools.count()

    @property
    def url(self) -> str:
        return self.orchestrator.url

    def spawn_worker(self) -> WorkerProcess:
        """Starts one worker without waiting for it."""
        number = next(self._numbers)
        name = f"worker-{number}"
        cache = self.cache_dir or self.root / f"cache-{number}"
        args = [
            *(sys.executable, "-m", "imagefleet", "worker"),
            *("--url", self.url),
            *("--cache-dir", str(cache)),
            *("--node-id", f"{self.node_prefix}-{number}", "--claim-wait", f"{self.claim_wait:g}"),
            *self.worker_args,
        ]
        worker = WorkerProcess(
            name,
            f"{self.node_prefix}-{number}",
            args,
            # The key through the environment, as documented (a --key shows in `ps`).
            child_env(IMAGEFLEET_WORKER_KEY=self.worker_key, **self.worker_env),
            self.root / f"{name}.log",
            own_session=self.own_session,
        )
        self.workers.append(worker)
        return worker

    def start_workers(self, number: int, timeout: float | None = None) -> list[WorkerProcess]:
        """Starts `number` workers at once (their imports overlap) and waits until each claims,
        by default a start-up timeout per worker at most."""
        started = [self.spawn_worker() for _ in range(number)]
        wait_ready(started, STARTUP_TIMEOUT * max(1, number) if timeout is None else timeout)
        return started

    def ready_workers(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.running and w.check_ready()]

    def retire(self, worker: WorkerProcess) -> None:
        """Kills a worker (if it still runs) and moves it to `gone`."""
        worker.kill()
        self.workers.remove(worker)
        self.gone.append(worker)

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Workers first, all signalled at once (each hands back what it runs), then the
        orchestrator; SIGKILL for stragglers after `grace` seconds. Safe to call again."""
        for worker in self.workers:
            worker.send(signal.SIGTERM)
        for worker in self.workers:
            worker.stop(grace)
        self.gone += self.workers
        self.workers = []
        self.orchestrator.stop(grace)

    def all_workers(self) -> list[WorkerProcess]:
        return [*self.gone, *self.workers]

    def processes(self) -> list[ManagedProcess]:
        """Every process this fleet ran, the orchestrator's current run first."""
        current = [self.orchestrator.process] if self.orchestrator.process else []
        return [*current, *self.all_workers()]
