"""The Kubernetes provider, through the official `kubernetes` client, against a local HTTP
server implementing just the endpoints it calls, as the Kubernetes API reference documents
them (https://kubernetes.io/docs/reference/kubernetes-api/):

- `GET/PATCH /apis/apps/v1/namespaces/{ns}/deployments/{name}/scale`: an autoscaling/v1
  `Scale` (`spec.replicas`, `status.replicas`, `status.selector`); PATCH as a merge patch;
- `GET /api/v1/namespaces/{ns}/pods?labelSelector=k=v,...`: a `PodList`;
- `PATCH /api/v1/namespaces/{ns}/pods/{name}`: a merge patch of the pod's metadata;
- `DELETE /api/v1/namespaces/{ns}/pods/{name}`: the pod, with its deletionTimestamp set;
- every call with `Authorization: Bearer <token>` from the kubeconfig; errors as `Status`
  objects (`kind: Status`, `message`, `reason`, `code`).

The client is configured from a real kubeconfig file written by the test.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imagefleet.scaling.pools import KubernetesSettings
from imagefleet.scaling.providers.base import (
    InstanceState,
    ProviderAuthError,
    ProviderConfigError,
    ProviderNotFound,
    ProviderRateLimited,
    ProviderUnavailable,
)
from imagefleet.scaling.providers.kubernetes import DELETION_COST, KubernetesProvider
from imagefleet.scaling.providers.retry import RetryPolicy
from tests.fake_api import Answer, FakeApi, Request, running

TOKEN = "k8s-test-token"
NS = "gpu"
SCALE = f"/apis/apps/v1/namespaces/{NS}/deployments/(?P<name>[^/]+)/scale"
PODS = f"/api/v1/namespaces/{NS}/pods"
POD = PODS + "/(?P<name>[^/]+)"
SELECTOR = "app=imagefleet-worker,pool=a100"
LABELS = {"app": "imagefleet-worker", "pool": "a100"}


def pod(name: str, phase: str, ready: bool, node: str | None = None, **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NS, "labels": dict(LABELS),
                     "creationTimestamp": "2026-11-22T04:00:00Z", **meta},
        "spec": {"containers": [{"name": "worker", "image": "imagefleet-worker"}],
                 "nodeName": node},
        "status": {"phase": phase,
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }  # fmt: skip


class FakeCluster:
    """One Deployment `worker-a100` and its pods; a deleted pod is recreated, as a
    ReplicaSet does."""

    def __init__(self) -> None:
        self.replicas = 3
        self.pods = {
            "w-1": pod("w-1", "Running", True, "gpu-node-1"),
            "w-2": pod("w-2", "Running", False, "gpu-node-1"),
            "w-3": pod("w-3", "Pending", False),
            "other": {**pod("other", "Running", True), "metadata": {"name": "other",
                      "labels": {"app": "something-else"}}},
        }  # fmt: skip
        self.created = 0

    def routes(self) -> dict[tuple[str, str], Any]:
        return {
            ("GET", SCALE): self.guarded(self.read_scale),
            ("PATCH", SCALE): self.guarded(self.patch_scale),
            ("GET", PODS): self.guarded(self.list_pods),
            ("PATCH", POD): self.guarded(self.patch_pod),
            ("DELETE", POD): self.guarded(self.delete_pod),
        }

    def guarded(self, handler: Any) -> Any:
        def check(request: Request, match: re.Match[str]) -> Answer:
            if request.headers.get("authorization") != f"Bearer {TOKEN}":
                return status(401, "Unauthorized", "Unauthorized")
            if request.method == "PATCH" and request.headers.get("content-type") != (
                "application/merge-patch+json"
            ):
                return status(415, "UnsupportedMediaType", "expected a merge patch")
            result: Answer = handler(request, match)
            return result

        return check

    def scale(self) -> dict[str, Any]:
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {"name": "worker-a100", "namespace": NS},
                "spec": {"replicas": self.replicas},
                "status": {"replicas": self.replicas, "selector": SELECTOR}}  # fmt: skip

    def read_scale(self, request: Request, match: re.Match[str]) -> Answer:
        if match["name"] != "worker-a100":
            return status(404, "NotFound", f'deployments.apps "{match["name"]}" not found')
        return Answer(200, self.scale())

    def patch_scale(self, request: Request, match: re.Match[str]) -> Answer:
        if match["name"] != "worker-a100":
            return status(404, "NotFound", f'deployments.apps "{match["name"]}" not found')
        self.replicas = request.body["spec"]["replicas"]
        return Answer(200, self.scale())

    def list_pods(self, request: Request, match: re.Match[str]) -> Answer:
        wanted = dict(p.split("=") for p in request.query["labelSelector"][0].split(","))
        items = [
            p for p in self.pods.values()
            if all(p["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())
        ]  # fmt: skip
        return Answer(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})

    def patch_pod(self, request: Request, match: re.Match[str]) -> Answer:
        found = self.pods.get(match["name"])
        if found is None:
            return status(404, "NotFound", f'pods "{match["name"]}" not found')
        annotations = request.body["metadata"]["annotations"]
        found["metadata"].setdefault("annotations", {}).update(annotations)
        return Answer(200, found)

    def delete_pod(self, request: Request, match: re.Match[str]) -> Answer:
        found = self.pods.pop(match["name"], None)
        if found is None:
            return status(404, "NotFound", f'pods "{match["name"]}" not found')
        self.created += 1
        fresh = f"w-new-{self.created}"
        self.pods[fresh] = pod(fresh, "Pending", False)
        found["metadata"]["deletionTimestamp"] = "2026-11-22T05:00:00Z"
        return Answer(200, found)


def status(code: int, reason: str, message: str) -> Answer:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}  # fmt: skip
    return Answer(code, body)


def kubeconfig(path: Path, server: str, token: str = TOKEN) -> Path:
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: fake\n  cluster:\n    server: {server}\n"
        f"users:\n- name: tester\n  user:\n    token: {token}\n"
        "contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: tester\n"
        "current-context: fake\n"
    )
    return path


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeCluster, FakeApi]]:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    fake = FakeCluster()
    with running(FakeApi(fake.routes())) as api:
        yield fake, api


def provider(
    api: FakeApi,
    tmp_path: Path,
    sleeps: list[float] | None = None,
    token: str = TOKEN,
    **settings: Any,
) -> KubernetesProvider:
    config = KubernetesSettings(
        type="kubernetes",
        namespace=NS,
        deployment=settings.pop("deployment", "worker-a100"),
        kubeconfig=kubeconfig(tmp_path / "kubeconfig", api.url, token),
        **settings,
    )
    record = sleeps.append if sleeps is not None else (lambda _: None)
    return KubernetesProvider("a100", config, sleep=record)


def test_scale_to_merge_patches_the_scale_subresource_with_the_bearer_token(
    cluster: tuple[FakeCluster, FakeApi], tmp_path: Path
) -> None:
    fake, api = cluster
    provider(api, tmp_path).scale_to(5)
    assert fake.replicas == 5
    (patch,) = api.calls("PATCH", SCALE)
    assert patch.path == f"/apis/apps/v1/namespaces/{NS}/deployments/worker-a100/scale"
    assert patch.body == {"spec": {"replicas": 5}}
    assert patch.headers["authorization"] == f"Bearer {TOKEN}"
    assert patch.headers["content-type"] == "application/merge-patch+json"


def test_list_instances_lists_the_deployments_pods_by_its_selector(
    cluster: tuple[FakeCluster, FakeApi], tmp_path: Path
) -> None:
    _, api = cluster
    instances = {i.id: i for i in provider(api, tmp_path).list_instances()}
    assert sorted(instances) == ["w-1", "w-2", "w-3"]
    assert api.calls("GET", PODS)[0].query["labelSelector"] == [SELECTOR]
    assert instances["w-1"].state is InstanceState.running
    assert instances["w-2"].state is InstanceState.starting  # running, not ready yet
    assert instances["w-3"].state is InstanceState.starting
    assert instances["w-1"].node_id == "w-1"  # the worker's hostname is its pod name
    assert instances["w-1"].started_at is not None


def test_node_ids_can_be_the_kubernetes_node_names(
    cluster: tuple[FakeCluster, FakeApi], tmp_path: Path
) -> None:
    _, api = cluster
    instances = {i.id: i for i in provider(api, tmp_path, node_id="node").list_instances()}
    assert instances["w-1"].node_id == "gpu-node-1"


def test_drain_sets_the_lowest_pod_deletion_cost(
    cluster: tuple[FakeCluster, FakeApi], tmp_path: Path
) -> None:
    _fake, api = cluster
    k8s = provider(api, tmp_path)
    k8s.drain("w-2")
    (patch,) = api.calls("PATCH", POD)
    assert patch.body == {"metadata": {"annotations": {DELETION_COST: "-2147483648"}}}
    states = {i.id: i.state for i in k8s.list_instances()}
    assert states["w-2"] is InstanceState.draining


def test_replace_deletes_the_pod_so_the_deployment_starts_a_fresh_one(
    cluster: tuple[FakeCluster, FakeApi], tmp_path: Path
) -> None:
    _fake, api = cluster
    k8s = provider(api, tmp_path)
    k8s.replace("w-1")
    assert len(api.calls("DELETE", POD)) == 1
    assert sorted(i.id for i in k8s.list_instances()) == ["w-2", "w-3", "w-new-1"]


def test_a_bad_token_is_an_auth_error_and_is_not_retried(
    cluster: tuple[FakeCluster, FakeApi], tmp_path: Path
) -> None:
    _, api = cluster
    with pytest.raises(ProviderAuthError) as caught:
        provider(api, tmp_path, token="wrong").scale_to(1)
    assert caught.value.status == 401
    assert len(api.requests) == 1


def test_an_unknown_deployment_is_not_found_with_the_servers_message(
    cluster: tuple[FakeCluster, FakeApi], tmp_path: Path
) -> None:
    _, api = cluster
    with pytest.raises(ProviderNotFound) as caught:
        provider(api, tmp_path, deployment="nope").scale_to(1)
    assert 'deployments.apps "nope" not found' in str(caught.value)


def test_a_429_waits_the_retry_after_then_succeeds(
    cluster: tuple[FakeCluster, FakeApi], tmp_path: Path
) -> None:
    fake, api = cluster
    api.fail_next(
        "PATCH", SCALE, Answer(429, status(429, "TooManyRequests", "slow down").body,
                               {"Retry-After": "3"})
    )  # fmt: skip
    sleeps: list[float] = []
    provider(api, tmp_path, sleeps).scale_to(2)
    assert fake.replicas == 2
    assert sleeps == [3.0]


def test_a_429_past_the_longest_wait_fails_the_call_with_its_retry_after(
    cluster: tuple[FakeCluster, FakeApi], tmp_path: Path
) -> None:
    _, api = cluster
    api.fail_next("PATCH", SCALE, Answer(429, None, {"Retry-After": "600"}))
    with pytest.raises(ProviderRateLimited) as caught:
        provider(api, tmp_path).scale_to(2)
    assert caught.value.retry_after == 600


def test_5xx_is_retried_then_given_up_after_the_policy_attempts(
    cluster: tuple[FakeCluster, FakeApi], tmp_path: Path
) -> None:
    _fake, api = cluster
    api.fail_next("GET", SCALE, status(503, "ServiceUnavailable", "etcd is busy"), times=2)
    sleeps: list[float] = []
    assert len(provider(api, tmp_path, sleeps).list_instances()) == 3
    assert len(sleeps) == 2
    api.fail_next("PATCH", SCALE, status(500, "InternalError", "boom"), times=10)
    with pytest.raises(ProviderUnavailable) as caught:
        provider(api, tmp_path).scale_to(9)
    assert "boom" in str(caught.value)
    assert len(api.calls("PATCH", SCALE)) == RetryPolicy().attempts


def test_an_unreachable_api_server_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    closed = FakeApi({})
    url = closed.url
    closed.server.server_close()  # nothing listens there any more
    config = KubernetesSettings(
        type="kubernetes", deployment="worker-a100", namespace=NS,
        kubeconfig=kubeconfig(tmp_path / "kubeconfig", url), request_timeout_seconds=2,
    )  # fmt: skip
    k8s = KubernetesProvider("a100", config, policy=RetryPolicy(attempts=1))
    with pytest.raises(ProviderUnavailable):
        k8s.scale_to(1)


def test_a_missing_kubeconfig_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    config = KubernetesSettings(type="kubernetes", deployment="w", kubeconfig=tmp_path / "absent")
    with pytest.raises(ProviderConfigError) as caught:
        KubernetesProvider("a100", config)
    assert "no usable cluster credentials" in str(caught.value)
