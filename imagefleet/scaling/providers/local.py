"""Local: worker processes on the orchestrator's own host (`imagefleet up --max-workers N`).

Each instance is one child process running the pool's command (by default this Python's
`-m imagefleet worker`) in its own session, so a Ctrl-C in the orchestrator's terminal does not
reach it before the orchestrator has drained it. A child gets in its environment:
- `IMAGEFLEET_POOL`: the pool, which the worker reports when it claims;
- `IMAGEFLEET_NODE_ID`: the instance id, so that quarantining a node quarantines this one
  process and `replace` can swap exactly it;
- `IMAGEFLEET_WORKER_SHUTDOWN_GRACE`: the pool's `drain_grace_seconds`.

Draining sends SIGTERM: the worker stops claiming and finishes its job within the grace (or
hands it back); a child still alive `KILL_MARGIN_SECONDS` after the grace is killed. Calls are
made by one control loop at a time; the provider is not meant to be shared between threads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from imagefleet.scaling.pools import LocalSettings
from imagefleet.scaling.providers.base import (
    Instance,
    InstanceState,
    Provider,
    ProviderNotFound,
    ProviderRejected,
)

log = logging.getLogger("imagefleet.scaling.local")
KILL_MARGIN_SECONDS = 10.0


@dataclass
class _Child:
    id: str
    process: subprocess.Popen[bytes]
    started_at: float
    log_file: IO[bytes] | None
    kill_at: float | None = None  # set when drained

    @property
    def draining(self) -> bool:
        return self.kill_at is not None


class LocalProvider(Provider):
    kind = "local"

    def __init__(
        self,
        pool: str,
        settings: LocalSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self._clock = clock
        self._wall_clock = wall_clock
        self._children: dict[str, _Child] = {}
        self._seq = 0
        # Ids stay unique across orchestrator restarts: a quarantined node id is never reused.
        self._run_id = secrets.token_hex(3)

    @property
    def command(self) -> list[str]:
        base = self.settings.command or [sys.executable, "-m", "imagefleet", "worker"]
        return [*base, *self.settings.args]

    def scale_to(self, replicas: int) -> None:
        self._reap()
        live = sorted(
            (c for c in self._children.values() if not c.draining),
            key=lambda c: c.started_at,
        )
        for _ in range(replicas - len(live)):
            self._start()
        # Without victims chosen by the loop, the newest go first (they hold the least work).
        for child in reversed(live[replicas:] if replicas < len(live) else []):
            self._drain(child)

    def list_instances(self) -> list[Instance]:
        self._reap()
        return [
            Instance(
                id=c.id,
                node_id=c.id,
                state=InstanceState.draining if c.draining else InstanceState.running,
                started_at=c.started_at,
                detail=f"pid {c.process.pid}",
            )
            for c in self._children.values()
        ]

    def drain(self, instance_id: str) -> None:
        self._drain(self._child(instance_id))

    def replace(self, instance_id: str) -> None:
        child = self._child(instance_id)
        self._drain(child)
        self._start()

    def close(self) -> None:
        """Drains every child and waits for them (killing those past their grace)."""
        for child in self._children.values():
            self._drain(child)
        for child in list(self._children.values()):
            assert child.kill_at is not None
            try:
                child.process.wait(timeout=max(0.0, child.kill_at - self._clock()))
            except subprocess.TimeoutExpired:
                self._kill(child)
        self._reap()

    def _start(self) -> _Child:
        self._seq += 1
        instance_id = f"{self.pool}-{self._run_id}-{self._seq}"
        env = {
            **os.environ,
            **self.settings.env,
            "IMAGEFLEET_POOL": self.pool,
            "IMAGEFLEET_NODE_ID": instance_id,
            "IMAGEFLEET_WORKER_SHUTDOWN_GRACE": str(self.settings.drain_grace_seconds),
        }
        log_file = None
        if self.settings.log_dir is not None:
            self.settings.log_dir.mkdir(parents=True, exist_ok=True)
            log_file = (self.settings.log_dir / f"{instance_id}.log").open("ab")
        try:
            process = subprocess.Popen(
                self.command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT if log_file else None,
                start_new_session=True,
            )
        except OSError as exc:
            if log_file:
                log_file.close()
            raise ProviderRejected(
                "local", "scale", f"cannot start {self.command[0]!r}: {exc.strerror}"
            ) from exc
        child = _Child(instance_id, process, self._wall_clock(), log_file)
        self._children[instance_id] = child
        log.info("pool %s: started %s (pid %d)", self.pool, instance_id, process.pid)
        return child

    def _child(self, instance_id: str) -> _Child:
        self._reap()
        try:
            return self._children[instance_id]
        except KeyError:
            raise ProviderNotFound(
                "local", "drain", f"pool '{self.pool}' has no running instance {instance_id!r}"
            ) from None

    def _drain(self, child: _Child) -> None:
        if child.draining:
            return
        child.kill_at = self._clock() + self.settings.drain_grace_seconds + KILL_MARGIN_SECONDS
        self._signal(child, signal.SIGTERM)
        log.info("pool %s: draining %s", self.pool, child.id)

    def _kill(self, child: _Child) -> None:
        log.warning("pool %s: %s outlived its drain grace; killing it", self.pool, child.id)
        self._signal(child, signal.SIGKILL)
        child.process.wait()

    def _signal(self, child: _Child, signum: int) -> None:
        # Already gone: the next reap removes it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.process.pid, signum)

    def _reap(self) -> None:
        """Forgets children that exited, and kills drained ones past their grace."""
        for child in list(self._children.values()):
            if child.process.poll() is None and child.draining:
                assert child.kill_at is not None
                if self._clock() >= child.kill_at:
                    self._kill(child)
            code = child.process.poll()
            if code is None:
                continue
            if not child.draining:
                log.warning("pool %s: %s exited by itself (status %s)", self.pool, child.id, code)
            if child.log_file:
                child.log_file.close()
            del self._children[child.id]
