"""The kinds this process knows: the built-in ones, plug-ins from the `imagefleet.kinds` entry
point group, and modules named by the operator (IMAGEFLEET_KIND_PLUGINS). A plug-in module
exposes `SPEC`, a KindSpec instance, or registers one itself with `register`.

Importing a plug-in runs its code, so plug-ins come from the operator's configuration only,
never from anything a client or worker sends.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Annotated, Any, Union

from pydantic import Field

from imagefleet.errors import InvalidField
from imagefleet.kinds.base import KindSpec

ENTRY_POINT_GROUP = "imagefleet.kinds"
_KINDS: dict[str, KindSpec] = {}


class KindPluginError(RuntimeError):
    """A configured kind plug-in could not be imported or is not a kind."""


def register(spec: KindSpec) -> KindSpec:
    """Adds a kind (the same spec again is harmless; another spec under a taken name is not)."""
    known = _KINDS.get(spec.name)
    if known is not None and known is not spec and type(known) is not type(spec):
        raise KindPluginError(f"job kind {spec.name!r} is registered twice")
    _KINDS[spec.name] = spec
    return spec


def get_kind(name: str) -> KindSpec:
    spec = _KINDS.get(name)
    if spec is None:
        raise InvalidField(
            ("body", "kind"), f"unknown job kind {name!r}; this server runs {kind_names()}"
        )
    return spec


def kind_names() -> list[str]:
    return sorted(_KINDS)


def all_kinds() -> list[KindSpec]:
    return [_KINDS[name] for name in kind_names()]


def load_plugins(modules: str = "") -> list[str]:
    """Imports entry-point plug-ins and the comma-separated `modules`; returns the kind names
    now registered."""
    for point in entry_points(group=ENTRY_POINT_GROUP):
        _adopt(point.load(), f"entry point {point.name}")
    for module_name in filter(None, (m.strip() for m in modules.split(","))):
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise KindPluginError(
                f"kind plug-in {module_name!r} cannot be imported: {exc}"
            ) from exc
        spec = getattr(module, "SPEC", None)
        if spec is not None:
            _adopt(spec, module_name)
    return kind_names()


def _adopt(spec: Any, origin: str) -> None:
    if not isinstance(spec, KindSpec):
        raise KindPluginError(f"{origin}: SPEC is not a KindSpec instance")
    register(spec)


def job_union() -> Any:
    """The submit body: one model per registered kind, told apart by `kind`."""
    models = tuple(spec.job_model() for spec in all_kinds())
    if len(models) == 1:
        return models[0]
    return Annotated[Union[models], Field(discriminator="kind")]  # noqa: UP007
