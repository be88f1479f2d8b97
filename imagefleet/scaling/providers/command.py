"""User scripts, for any cloud we have no provider for.

Each script is an argv list (no shell, so nothing in the environment is ever parsed as shell
text) run with a timeout, the orchestrator's environment plus the pool's `env`, and:

- `scale`: `IMAGEFLEET_POOL`, `IMAGEFLEET_REPLICAS` (the count to reach);
- `replace`, `drain`: `IMAGEFLEET_POOL`, `IMAGEFLEET_INSTANCE_ID`;
- `instances` prints JSON on stdout: a list (or `{"instances": [...]}`) of objects with `id`,
  and optionally `node_id`, `state` (starting, running, draining, stopping, failed) and
  `started_at` (epoch seconds).

Exit 0 means done; 75 (EX_TEMPFAIL) means "try again later" (retried with backoff); any other
status fails the call with the script's last stderr lines. A script that outlives its timeout is
killed with its whole process group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

from imagefleet.scaling.pools import CommandSettings
from imagefleet.scaling.providers.base import (
    Instance,
    InstanceState,
    Provider,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)
from imagefleet.scaling.providers.retry import RetryPolicy, call_with_retry

EX_TEMPFAIL = 75
STDERR_TAIL_CHARS = 800


class CommandProvider(Provider):
    kind = "command"

    def __init__(
        self,
        pool: str,
        settings: CommandSettings,
        *,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.policy = policy or RetryPolicy()
        self._sleep = sleep

    def scale_to(self, replicas: int) -> None:
        self._run("scale", self.settings.scale, {"IMAGEFLEET_REPLICAS": str(replicas)})

    def list_instances(self) -> list[Instance]:
        if self.settings.instances is None:
            return []
        out = self._run("list instances", self.settings.instances, {})
        try:
            data = json.loads(out or "[]")
        except ValueError as exc:
            raise ProviderRejected(
                "command", "list instances", f"the script printed no JSON ({exc}): {out[:200]!r}"
            ) from exc
        items = data.get("instances", []) if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise ProviderRejected("command", "list instances", "expected a JSON list of instances")
        return [_instance(item) for item in items]

    def drain(self, instance_id: str) -> None:
        if self.settings.drain is not None:
            self._run("drain", self.settings.drain, {"IMAGEFLEET_INSTANCE_ID": instance_id})

    def replace(self, instance_id: str) -> None:
        self._run("replace", self.settings.replace, {"IMAGEFLEET_INSTANCE_ID": instance_id})

    def _run(self, operation: str, argv: list[str], extra: dict[str, str]) -> str:
        env = {**os.environ, **self.settings.env, "IMAGEFLEET_POOL": self.pool, **extra}

        def once() -> str:
            return _run_script(operation, argv, env, self.settings.timeout_seconds)

        return call_with_retry(once, self.policy, sleep=self._sleep)


def _run_script(operation: str, argv: list[str], env: dict[str, str], timeout: float) -> str:
    try:
        process = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    except OSError as exc:
        raise ProviderRejected(
            "command", operation, f"cannot run {argv[0]!r}: {exc.strerror}"
        ) from exc
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise ProviderTimeout(
            "command", operation, f"{argv[0]!r} ran past its {timeout:g}s timeout; killed"
        ) from exc
    if process.returncode == 0:
        return out
    tail = err.strip()[-STDERR_TAIL_CHARS:] or "(no stderr)"
    message = f"{argv[0]!r} exited with status {process.returncode}: {tail}"
    if process.returncode == EX_TEMPFAIL:
        raise ProviderUnavailable("command", operation, message)
    raise ProviderRejected("command", operation, message)


def _instance(item: Any) -> Instance:
    if not isinstance(item, dict) or not isinstance(item.get("id"), str | int):
        raise ProviderRejected(
            "command", "list instances", f'each instance needs an "id", got {item!r:.200}'
        )
    try:
        state = InstanceState(item.get("state") or "running")
    except ValueError as exc:
        allowed = ", ".join(s.value for s in InstanceState)
        raise ProviderRejected(
            "command", "list instances", f"instance {item['id']}: state must be one of {allowed}"
        ) from exc
    started = item.get("started_at")
    node = item.get("node_id")
    return Instance(
        id=str(item["id"]),
        node_id=str(node) if node is not None else None,
        state=state,
        started_at=float(started) if isinstance(started, int | float) else None,
    )
