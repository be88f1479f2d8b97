"""The provider interface: the four things the autoscaler asks of any place workers run.

A provider is told a replica count (`scale_to`), reports its instances (`list_instances`),
marks one to go first and stop taking work (`drain`) and swaps a bad one for a fresh one
(`replace`). Calls are synchronous and bounded by timeouts; the control loop runs them off its
event loop. Every failure is a `ProviderError` subclass that says whether retrying can help, so
the loop backs off and shows the error in the pool's status instead of crashing.

Scale-in is the loop's job, not the provider's: it picks victims with `choose_victims`, drains
them (a busy worker finishes its job first), and lowers the count once they are idle; the
providers that choose which instance to delete themselves (Kubernetes, SaladCloud) are told by
`drain` to delete the drained ones first.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar


class InstanceState(StrEnum):
    starting = "starting"  # allocated, pulling or booting: not taking work yet
    running = "running"
    draining = "draining"  # marked to go first; stops taking work
    stopping = "stopping"  # being deleted
    failed = "failed"


@dataclass(frozen=True)
class Instance:
    """One worker's place in a provider. `node_id` is what its worker reports as its node, so
    that a quarantined node can be matched to the instance to replace."""

    id: str
    node_id: str | None
    state: InstanceState
    started_at: float | None = None
    detail: str = ""


class ProviderError(Exception):
    """A provider call failed. `retryable` says whether the same call may succeed later;
    `retry_after` is the provider's own hint (Retry-After), in seconds."""

    retryable: ClassVar[bool] = False

    def __init__(
        self,
        provider: str,
        operation: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.provider = provider
        self.operation = operation
        self.message = message
        self.status = status
        self.retry_after = retry_after
        super().__init__(f"{provider}: {operation} failed: {message}")


class ProviderConfigError(ProviderError):
    """Missing or unusable settings (no API key, no kubeconfig, a missing extra)."""


class ProviderAuthError(ProviderError):
    """401/403: the credentials are wrong or lack a permission."""


class ProviderNotFound(ProviderError):
    """404: the deployment, container group or instance does not exist."""


class ProviderRejected(ProviderError):
    """The provider refused the request as invalid (400, 409, 422, a script's failure)."""


class ProviderUnavailable(ProviderError):
    """5xx, connection failures: the provider may answer later."""

    retryable = True


class ProviderTimeout(ProviderUnavailable):
    """No answer in time; the call may or may not have taken effect."""


class ProviderRateLimited(ProviderUnavailable):
    """429: asked to slow down, for `retry_after` seconds when the provider said."""


class Provider(ABC):
    """Where a pool's workers run. Implementations hold their clients and must be closed."""

    kind: ClassVar[str]

    @abstractmethod
    def scale_to(self, replicas: int) -> None:
        """Asks for exactly `replicas` instances (starting or stopping some as needed)."""

    @abstractmethod
    def list_instances(self) -> list[Instance]:
        """The pool's current instances, in every state but gone."""

    @abstractmethod
    def drain(self, instance_id: str) -> None:
        """Marks the instance to be removed first at the next scale-in, and stops it taking new
        work where the provider can reach the worker (local: SIGTERM with a grace)."""

    @abstractmethod
    def replace(self, instance_id: str) -> None:
        """Replaces a bad instance with a fresh one, elsewhere where the provider can choose."""

    def close(self) -> None:  # noqa: B027 (a no-op unless the provider holds resources)
        """Releases clients and connections."""
