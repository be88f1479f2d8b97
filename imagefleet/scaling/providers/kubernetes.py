"""Kubernetes: a Deployment's replicas, through the official `kubernetes` client (extra `k8s`).

Calls, all documented in the Kubernetes API reference:
- `PATCH /apis/apps/v1/namespaces/{ns}/deployments/{name}/scale` with
  `{"spec": {"replicas": n}}` (a merge patch of the scale subresource) to scale;
- `GET .../deployments/{name}/scale` for the pods' label selector (`status.selector`), then
  `GET /api/v1/namespaces/{ns}/pods?labelSelector=...` to list them;
- `PATCH /api/v1/namespaces/{ns}/pods/{pod}` setting the annotation
  `controller.kubernetes.io/pod-deletion-cost` to the lowest value, so that the ReplicaSet
  deletes a drained pod first when the count falls (and never a busy one in its place);
- `DELETE /api/v1/namespaces/{ns}/pods/{pod}` to replace a pod on a quarantined node: the
  Deployment starts a fresh one at once.

The service account needs `get`/`patch` on `deployments/scale` and `get`/`list`/`patch`/
`delete` on `pods` in the namespace (docs/autoscaling.md has the Role).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from imagefleet.scaling.pools import KubernetesSettings
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

T = TypeVar("T")
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
DRAIN_COST = str(-(2**31))  # the lowest: deleted before every other pod
MERGE_PATCH = "application/merge-patch+json"


class KubernetesProvider(Provider):
    kind = "kubernetes"

    def __init__(
        self,
        pool: str,
        settings: KubernetesSettings,
        *,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        try:
            from kubernetes import client, config
        except ImportError as exc:
            raise ProviderConfigError(
                "kubernetes",
                "start",
                f"pool '{pool}' needs the Kubernetes client: pip install 'imagefleet[k8s]'",
            ) from exc
        from kubernetes.config.config_exception import ConfigException

        self.pool = pool
        self.settings = settings
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
        configuration = client.Configuration()
        # Retries are ours (with Retry-After and backoff); urllib3's own would hide them.
        configuration.retries = False
        try:
            if settings.kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ:
                config.load_incluster_config(client_configuration=configuration)
            else:
                config.load_kube_config(
                    config_file=str(settings.kubeconfig) if settings.kubeconfig else None,
                    context=settings.context,
                    client_configuration=configuration,
                    persist_config=False,
                )
        except (ConfigException, OSError) as exc:
            raise ProviderConfigError(
                "kubernetes",
                "start",
                f"pool '{pool}': no usable cluster credentials ({exc}); "
                "set provider.kubeconfig or run the orchestrator in the cluster",
            ) from exc
        self._api = client.ApiClient(configuration)
        self._apps = client.AppsV1Api(self._api)
        self._core = client.CoreV1Api(self._api)

    def scale_to(self, replicas: int) -> None:
        self._call(
            "scale",
            lambda: self._apps.patch_namespaced_deployment_scale(
                self.settings.deployment,
                self.settings.namespace,
                {"spec": {"replicas": replicas}},
                _content_type=MERGE_PATCH,
                _request_timeout=self.settings.request_timeout_seconds,
            ),
        )

    def list_instances(self) -> list[Instance]:
        scale = self._call(
            "read scale",
            lambda: self._apps.read_namespaced_deployment_scale(
                self.settings.deployment,
                self.settings.namespace,
                _request_timeout=self.settings.request_timeout_seconds,
            ),
        )
        selector = scale.status.selector if scale.status else None
        if not selector:
            return []
        pods = self._call(
            "list pods",
            lambda: self._core.list_namespaced_pod(
                self.settings.namespace,
                label_selector=selector,
                _request_timeout=self.settings.request_timeout_seconds,
            ),
        )
        return [self._instance(pod) for pod in pods.items]

    def drain(self, instance_id: str) -> None:
        body = {"metadata": {"annotations": {DELETION_COST: DRAIN_COST}}}
        self._call(
            "drain",
            lambda: self._core.patch_namespaced_pod(
                instance_id,
                self.settings.namespace,
                body,
                _content_type=MERGE_PATCH,
                _request_timeout=self.settings.request_timeout_seconds,
            ),
        )

    def replace(self, instance_id: str) -> None:
        self._call(
            "replace",
            lambda: self._core.delete_namespaced_pod(
                instance_id,
                self.settings.namespace,
                _request_timeout=self.settings.request_timeout_seconds,
            ),
        )

    def close(self) -> None:
        self._api.close()

    def _instance(self, pod: Any) -> Instance:
        meta, spec, status = pod.metadata, pod.spec, pod.status
        annotations = (meta.annotations or {}) if meta else {}
        phase = status.phase if status else None
        ready = (
            any(c.type == "Ready" and c.status == "True" for c in (status.conditions or []))
            if status
            else False
        )
        if meta and meta.deletion_timestamp is not None:
            state = InstanceState.stopping
        elif annotations.get(DELETION_COST) == DRAIN_COST:
            state = InstanceState.draining
        elif phase == "Running" and ready:
            state = InstanceState.running
        elif phase in ("Pending", "Running"):
            state = InstanceState.starting
        else:
            state = InstanceState.failed
        name = meta.name if meta else ""
        node = spec.node_name if spec else None
        created = meta.creation_timestamp if meta else None
        return Instance(
            id=name,
            node_id=node if self.settings.node_id == "node" else name,
            state=state,
            started_at=created.timestamp() if created else None,
            detail=phase or "",
        )

    def _call(self, operation: str, request: Callable[[], T]) -> T:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError, TimeoutError

        def once() -> T:
            try:
                return request()
            except ApiException as exc:
                headers = exc.headers or {}
                raise error_for_status(
                    "kubernetes",
                    operation,
                    int(exc.status or 0),
                    _status_message(exc.body) or str(exc.reason or ""),
                    parse_retry_after(headers.get("Retry-After"), time.time()),
                ) from exc
            except TimeoutError as exc:
                raise ProviderTimeout("kubernetes", operation, f"no answer: {exc}") from exc
            except HTTPError as exc:
                raise ProviderUnavailable(
                    "kubernetes", operation, f"cannot reach the API server: {exc}"
                ) from exc

        return call_with_retry(once, self.policy, sleep=self._sleep)


def _status_message(body: Any) -> str:
    """The API server answers errors with a `Status` object; its message says what failed."""
    if not body:
        return ""
    try:
        status = json.loads(body)
    except (TypeError, ValueError):
        return str(body)
    return str(status.get("message") or "") if isinstance(status, dict) else str(body)
