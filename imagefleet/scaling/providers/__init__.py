"""Providers: where a pool's workers run. `provider_for` builds the one a pool names."""

from __future__ import annotations

from imagefleet.scaling.pools import (
    CommandSettings,
    KubernetesSettings,
    LocalSettings,
    Pool,
    SaladSettings,
)
from imagefleet.scaling.providers.base import Provider
from imagefleet.scaling.providers.retry import RetryPolicy


def provider_for(pool: Pool, policy: RetryPolicy | None = None) -> Provider:
    """The provider for `pool`; raises ProviderConfigError when its settings cannot work here
    (no API key in the environment, no cluster credentials, the `k8s` extra missing)."""
    settings = pool.provider
    if isinstance(settings, LocalSettings):
        from imagefleet.scaling.providers.local import LocalProvider

        return LocalProvider(pool.name, settings)
    if isinstance(settings, KubernetesSettings):
        from imagefleet.scaling.providers.kubernetes import KubernetesProvider

        return KubernetesProvider(pool.name, settings, policy=policy)
    if isinstance(settings, SaladSettings):
        from imagefleet.scaling.providers.salad import SaladProvider

        return SaladProvider(pool.name, settings, policy=policy)
    if isinstance(settings, CommandSettings):
        from imagefleet.scaling.providers.command import CommandProvider

        return CommandProvider(pool.name, settings, policy=policy)
    raise AssertionError(f"unhandled provider settings {type(settings).__name__}")
