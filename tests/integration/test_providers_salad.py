"""The SaladCloud provider against a local HTTP server implementing just the endpoints it calls,
as SaladCloud's public API reference documents them (https://docs.salad.com/reference):

- `GET/PATCH /organizations/{org}/projects/{project}/containers/{group}`: the container group,
  with `replicas` and `current_state.status`; PATCH takes `application/merge-patch+json`;
- `POST .../containers/{group}/start`;
- `GET .../containers/{group}/instances`: `{"instances": [...]}`;
- `PATCH .../instances/{id}`: `{"deletion_cost": n}` (merge patch);
- `POST .../instances/{id}/reallocate`: 202;
- every call authenticated by the `Salad-Api-Key` header; errors as problem details
  (`application/problem+json`: type, title, status, detail).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from imagefleet.scaling.pools import SaladSettings
from imagefleet.scaling.providers.base import (
    InstanceState,
    ProviderAuthError,
    ProviderConfigError,
    ProviderNotFound,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)
from imagefleet.scaling.providers.retry import RetryPolicy
from imagefleet.scaling.providers.salad import KEEP_COST, SaladProvider
from tests.fake_api import Answer, FakeApi, Request, running

KEY = "salad-test-key"
GROUP = "/organizations/acme/projects/prod/containers/workers"


class FakeSalad:
    """One container group and its instances, as SaladCloud keeps them."""

    def __init__(self) -> None:
        self.replicas = 2
        self.status = "running"
        self.instances: dict[str, dict[str, Any]] = {
            "i-1": {"id": "i-1", "machine_id": "m-1", "state": "running", "ready": True,
                    "update_time": "2026-11-22T04:00:00Z", "version": 1, "deletion_cost": 0},
            "i-2": {"instance_id": "i-2", "machine_id": "m-2", "state": "downloading",
                    "update_time": "2026-11-22T04:01:00Z", "version": 1},
        }  # fmt: skip
        self.reallocated: list[str] = []
        self.hang = False

    def routes(self) -> dict[tuple[str, str], Any]:
        instance = GROUP + "/instances/(?P<id>[^/]+)"
        return {
            ("GET", GROUP): self.guarded(lambda r, m: self.group()),
            ("PATCH", GROUP): self.guarded(self.patch_group),
            ("POST", GROUP + "/start"): self.guarded(self.start),
            ("GET", GROUP + "/instances"): self.guarded(
                lambda r, m: Answer(200, {"instances": list(self.instances.values())})
            ),
            ("PATCH", instance): self.guarded(self.patch_instance),
            ("POST", instance + "/reallocate"): self.guarded(self.reallocate),
        }

    def guarded(self, handler: Any) -> Any:
        def check(request: Request, match: re.Match[str]) -> Answer:
            if request.headers.get("salad-api-key") != KEY:
                return problem(401, "Unauthorized", "a valid Salad-Api-Key header is required")
            if request.method == "PATCH" and request.headers.get("content-type") != (
                "application/merge-patch+json"
            ):
                return problem(415, "Unsupported Media Type", "use merge-patch+json")
            result: Answer = handler(request, match)
            return result

        return check

    def group(self) -> Answer:
        return Answer(200, {"id": "g-1", "name": "workers", "replicas": self.replicas,
                            "current_state": {"status": self.status}})  # fmt: skip

    def patch_group(self, request: Request, match: re.Match[str]) -> Answer:
        self.replicas = request.body["replicas"]
        return self.group()

    def start(self, request: Request, match: re.Match[str]) -> Answer:
        self.status = "running"
        return Answer(202)

    def patch_instance(self, request: Request, match: re.Match[str]) -> Answer:
        item = self.instances.get(match["id"])
        if item is None:
            return problem(404, "Not Found", f"instance {match['id']} not found")
        item.update(request.body)
        return Answer(200, item)

    def reallocate(self, request: Request, match: re.Match[str]) -> Answer:
        if match["id"] not in self.instances:
            return problem(404, "Not Found", f"instance {match['id']} not found")
        self.reallocated.append(match["id"])
        return Answer(202)


def problem(status: int, title: str, detail: str) -> Answer:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return Answer(status, body, content_type="application/problem+json")


@pytest.fixture
def salad() -> Iterator[tuple[FakeSalad, FakeApi]]:
    cloud = FakeSalad()
    with running(FakeApi(cloud.routes())) as api:
        yield cloud, api


def provider(api: FakeApi, sleeps: list[float] | None = None, **settings: Any) -> SaladProvider:
    config = SaladSettings(
        type="salad",
        organization="acme",
        project="prod",
        container_group="workers",
        base_url=api.url,
        **settings,
    )
    record = sleeps.append if sleeps is not None else (lambda _: None)
    return SaladProvider("salad-4090", config, api_key=KEY, sleep=record)


def test_scale_to_patches_the_replica_count_with_the_api_key(
    salad: tuple[FakeSalad, FakeApi],
) -> None:
    cloud, api = salad
    provider(api).scale_to(5)
    assert cloud.replicas == 5
    (patch,) = api.calls("PATCH", GROUP)
    assert patch.body == {"replicas": 5}
    assert patch.headers["salad-api-key"] == KEY
    assert patch.headers["content-type"] == "application/merge-patch+json"


def test_scaling_a_stopped_group_up_starts_it(salad: tuple[FakeSalad, FakeApi]) -> None:
    cloud, api = salad
    cloud.status = "stopped"
    provider(api).scale_to(1)
    assert cloud.status == "running"
    assert len(api.calls("POST", GROUP + "/start")) == 1


def test_scale_in_keeps_every_undrained_instance_so_the_drained_ones_go_first(
    salad: tuple[FakeSalad, FakeApi],
) -> None:
    cloud, api = salad
    salad_provider = provider(api)
    salad_provider.drain("i-2")
    salad_provider.scale_to(1)
    assert cloud.instances["i-1"]["deletion_cost"] == KEEP_COST
    assert cloud.instances["i-2"]["deletion_cost"] == 1
    assert cloud.replicas == 1
    # The costs are set before the count falls.
    order = [(r.method, r.path) for r in api.requests if r.method == "PATCH"]
    assert order[-1] == ("PATCH", GROUP)


def test_list_instances_maps_states_and_machine_ids(salad: tuple[FakeSalad, FakeApi]) -> None:
    _, api = salad
    instances = {i.id: i for i in provider(api).list_instances()}
    assert instances["i-1"].state is InstanceState.running
    assert instances["i-1"].node_id == "m-1"
    assert instances["i-1"].started_at is not None
    assert instances["i-2"].state is InstanceState.starting  # older answers say instance_id
    assert instances["i-2"].detail == "downloading"


def test_drain_lowers_the_deletion_cost_and_shows_as_draining(
    salad: tuple[FakeSalad, FakeApi],
) -> None:
    _cloud, api = salad
    salad_provider = provider(api)
    salad_provider.drain("i-1")
    assert api.calls("PATCH", GROUP + "/instances/i-1")[0].body == {"deletion_cost": 1}
    states = {i.id: i.state for i in salad_provider.list_instances()}
    assert states["i-1"] is InstanceState.draining


def test_replace_reallocates_the_instance(salad: tuple[FakeSalad, FakeApi]) -> None:
    cloud, api = salad
    provider(api).replace("i-1")
    assert cloud.reallocated == ["i-1"]


def test_a_bad_key_is_an_auth_error_and_is_not_retried(salad: tuple[FakeSalad, FakeApi]) -> None:
    _, api = salad
    config = SaladSettings(
        type="salad", organization="acme", project="prod", container_group="workers",
        base_url=api.url,
    )  # fmt: skip
    with pytest.raises(ProviderAuthError) as caught:
        SaladProvider("salad-4090", config, api_key="wrong").scale_to(3)
    assert "Unauthorized: a valid Salad-Api-Key header is required" in str(caught.value)
    assert "check the credentials" in str(caught.value)
    assert len(api.requests) == 1


def test_an_unknown_instance_is_not_found(salad: tuple[FakeSalad, FakeApi]) -> None:
    _, api = salad
    with pytest.raises(ProviderNotFound) as caught:
        provider(api).replace("i-404")
    assert caught.value.status == 404
    assert "instance i-404 not found" in str(caught.value)


def test_a_429_waits_the_retry_after_then_succeeds(salad: tuple[FakeSalad, FakeApi]) -> None:
    cloud, api = salad
    api.fail_next("PATCH", GROUP, Answer(429, {"title": "Too Many Requests"}, {"Retry-After": "7"}))
    sleeps: list[float] = []
    provider(api, sleeps).scale_to(4)
    assert cloud.replicas == 4
    assert sleeps == [7.0]
    assert len(api.calls("PATCH", GROUP)) == 2


def test_a_long_retry_after_fails_the_call_for_the_loop_to_back_off(
    salad: tuple[FakeSalad, FakeApi],
) -> None:
    _, api = salad
    api.fail_next("PATCH", GROUP, Answer(429, None, {"Retry-After": "3600"}))
    with pytest.raises(ProviderRateLimited) as caught:
        provider(api).scale_to(4)
    assert caught.value.retry_after == 3600
    assert caught.value.retryable


def test_5xx_is_retried_with_growing_backoff(salad: tuple[FakeSalad, FakeApi]) -> None:
    _cloud, api = salad
    api.fail_next("GET", GROUP + "/instances", problem(503, "Unavailable", "try later"), times=2)
    sleeps: list[float] = []
    assert len(provider(api, sleeps).list_instances()) == 2
    assert len(sleeps) == 2
    assert sleeps[1] > sleeps[0]


def test_5xx_that_persists_fails_after_the_policy_attempts(
    salad: tuple[FakeSalad, FakeApi],
) -> None:
    _, api = salad
    api.fail_next("GET", GROUP + "/instances", problem(500, "Internal", "boom"), times=10)
    with pytest.raises(ProviderUnavailable) as caught:
        provider(api).list_instances()
    assert "HTTP 500: Internal: boom" in str(caught.value)
    assert len(api.requests) == RetryPolicy().attempts


def test_a_server_that_does_not_answer_in_time_is_a_timeout() -> None:
    released = threading.Event()

    def stall(request: Request, match: re.Match[str]) -> Answer:
        released.wait(5)
        return Answer(200, {"replicas": 1})

    with running(FakeApi({("GET", GROUP): stall})) as api:
        config = SaladSettings(
            type="salad", organization="acme", project="prod", container_group="workers",
            base_url=api.url, request_timeout_seconds=0.2,
        )  # fmt: skip
        quick = SaladProvider("p", config, api_key=KEY, policy=RetryPolicy(attempts=1))
        try:
            with pytest.raises(ProviderTimeout) as caught:
                quick.scale_to(0)
            assert caught.value.retryable
        finally:
            released.set()
            quick.close()


def test_no_api_key_in_the_environment_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SALAD_API_KEY", raising=False)
    config = SaladSettings(type="salad", organization="acme", project="prod", container_group="g1")
    with pytest.raises(ProviderConfigError) as caught:
        SaladProvider("salad-4090", config)
    assert "set SALAD_API_KEY" in str(caught.value)


def test_the_key_is_read_from_the_named_variable(
    monkeypatch: pytest.MonkeyPatch, salad: tuple[FakeSalad, FakeApi]
) -> None:
    _, api = salad
    monkeypatch.setenv("MY_SALAD_KEY", KEY)
    config = SaladSettings(
        type="salad", organization="acme", project="prod", container_group="workers",
        base_url=api.url, api_key_env="MY_SALAD_KEY",
    )  # fmt: skip
    SaladProvider("salad-4090", config).scale_to(2)
    assert api.requests[-1].headers["salad-api-key"] == KEY
