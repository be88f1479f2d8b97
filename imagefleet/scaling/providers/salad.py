"""SaladCloud: a container group's replica count, through SaladCloud's public REST API.

Endpoints (https://docs.salad.com/reference, all under
`{base_url}/organizations/{org}/projects/{project}/containers/{group}`, authenticated by the
`Salad-Api-Key` header):
- `PATCH` the group with `{"replicas": n}` (`application/merge-patch+json`) to scale; a
  stopped group is then started with `POST .../start`;
- `GET .../instances` lists the instances (`id` or, in older answers, `instance_id`,
  `machine_id`, `state`, `ready`, `deletion_cost`);
- `PATCH .../instances/{id}` with `{"deletion_cost": n}` decides which instances SaladCloud
  deletes first when the count falls (lowest first). Every new instance has 0, so a drained
  one is marked with 1, and before a scale-in every instance not drained is raised to the
  largest cost the API takes: the drained ones go first;
- `POST .../instances/{id}/reallocate` moves a bad instance to another machine.

httpx rather than the official SDK: the SDK is generated code with its own transport, and the
five calls above are all we need.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx

from imagefleet.scaling.pools import SaladSettings
from imagefleet.scaling.providers.base import (
    Instance,
    InstanceState,
    Provider,
    ProviderConfigError,
    ProviderTimeout,
    ProviderUnavailable,
)
from imagefleet.scaling.providers.retry import (
    RetryPolicy,
    call_with_retry,
    error_for_status,
    parse_retry_after,
)

MERGE_PATCH = "application/merge-patch+json"
KEEP_COST = 100_000  # the API's largest deletion cost
DRAIN_COST = 1  # 0 is every new instance's default, so it cannot mark anything
STARTING_STATES = {"allocating", "downloading", "creating"}


class SaladProvider(Provider):
    kind = "salad"

    def __init__(
        self,
        pool: str,
        settings: SaladSettings,
        *,
        api_key: str | None = None,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        key = api_key or os.environ.get(settings.api_key_env)
        if not key:
            raise ProviderConfigError(
                "salad",
                "start",
                f"pool '{pool}': set {settings.api_key_env} to a SaladCloud API key",
            )
        self.pool = pool
        self.settings = settings
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
        group = (
            f"/organizations/{settings.organization}/projects/{settings.project}"
            f"/containers/{settings.container_group}"
        )
        # Full URLs, not httpx's base_url, which would add a slash to the group's own path.
        self._url = settings.base_url.rstrip("/") + group
        self._http = httpx.Client(
            headers={"Salad-Api-Key": key, "Accept": "application/json"},
            timeout=settings.request_timeout_seconds,
        )

    def scale_to(self, replicas: int) -> None:
        if replicas < self._replicas():
            self._protect_undrained()
        group = self._call("PATCH", "", "scale", body={"replicas": replicas})
        status = (group.get("current_state") or {}).get("status")
        if replicas > 0 and status == "stopped":
            self._call("POST", "/start", "start")

    def list_instances(self) -> list[Instance]:
        return [_instance(item) for item in self._instances()]

    def drain(self, instance_id: str) -> None:
        self._call(
            "PATCH", f"/instances/{instance_id}", "drain", body={"deletion_cost": DRAIN_COST}
        )

    def replace(self, instance_id: str) -> None:
        self._call("POST", f"/instances/{instance_id}/reallocate", "replace")

    def close(self) -> None:
        self._http.close()

    def _replicas(self) -> int:
        return int(self._call("GET", "", "read").get("replicas") or 0)

    def _instances(self) -> list[dict[str, Any]]:
        answer = self._call("GET", "/instances", "list instances")
        items = answer.get("instances") or []
        return [item for item in items if isinstance(item, dict)]

    def _protect_undrained(self) -> None:
        """Before a scale-in, every instance not drained gets the highest deletion cost, so that
        SaladCloud removes the drained ones (cost 1) and never a busy worker."""
        for item in self._instances():
            cost = item.get("deletion_cost")
            if cost not in (DRAIN_COST, KEEP_COST):
                self._call(
                    "PATCH",
                    f"/instances/{_instance_id(item)}",
                    "protect",
                    body={"deletion_cost": KEEP_COST},
                )

    def _call(
        self, method: str, path: str, operation: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        headers = {"Content-Type": MERGE_PATCH} if body is not None else {}
        content = json.dumps(body).encode() if body is not None else None

        def once() -> dict[str, Any]:
            try:
                response = self._http.request(
                    method, self._url + path, headers=headers, content=content
                )
            except httpx.TimeoutException as exc:
                raise ProviderTimeout("salad", operation, f"no answer: {exc!r}") from exc
            except httpx.TransportError as exc:
                raise ProviderUnavailable("salad", operation, f"cannot connect: {exc!r}") from exc
            if response.is_success:
                answer = response.json() if response.content else {}
                return answer if isinstance(answer, dict) else {}
            raise error_for_status(
                "salad",
                operation,
                response.status_code,
                _problem(response),
                parse_retry_after(response.headers.get("Retry-After"), time.time()),
            )

        return call_with_retry(once, self.policy, sleep=self._sleep)


def _problem(response: httpx.Response) -> str:
    """SaladCloud errors are RFC 9457 problem details: title and detail say what happened."""
    try:
        body = response.json()
    except ValueError:
        return response.text
    if isinstance(body, dict):
        parts = [str(body[k]) for k in ("title", "detail") if body.get(k)]
        if parts:
            return ": ".join(parts)
    return response.text


def _instance_id(item: dict[str, Any]) -> str:
    return str(item.get("id") or item.get("instance_id") or "")


def _instance(item: dict[str, Any]) -> Instance:
    state_word = str(item.get("state") or "")
    if item.get("deletion_cost") == DRAIN_COST:
        state = InstanceState.draining
    elif state_word == "stopping":
        state = InstanceState.stopping
    elif state_word in STARTING_STATES or (state_word == "running" and not item.get("ready")):
        state = InstanceState.starting
    elif state_word == "running":
        state = InstanceState.running
    else:
        state = InstanceState.failed
    return Instance(
        id=_instance_id(item),
        node_id=item.get("machine_id"),
        state=state,
        started_at=_timestamp(item.get("update_time")) if state_word == "running" else None,
        detail=state_word,
    )


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
