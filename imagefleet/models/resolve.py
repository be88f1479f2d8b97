"""Turning a job's model references into exact registered versions, at submit.

Each reference must name a registered model (404 otherwise), of the kind its role takes (a LoRA
named as the checkpoint is a 422 naming it), and of the checkpoint's base architecture when
both are known (an SDXL LoRA on an SD 1.5 checkpoint is a 422).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection

from imagefleet.errors import InvalidField, NotFound
from imagefleet.kinds.base import ModelNeed
from imagefleet.protocol import ModelRole
from imagefleet.store.job_models import JobModel
from imagefleet.store.models import find_model


def resolve_models(conn: Connection, needs: Sequence[ModelNeed]) -> list[JobModel]:
    resolved = []
    for need in needs:
        use = need.use
        model = find_model(conn, use.name, use.version, use.sha256)
        if model is None and need.role is ModelRole.annotator:
            # The kind is valid but this server lacks what it needs: the request's field.
            raise InvalidField(
                need.loc,
                f"no annotator model named {use.name!r} is registered: register a depth "
                "model (kind annotator, e.g. a transformers DPT folder) or name one here",
            )
        if model is None:
            detail = (
                f" version {use.version}"
                if use.version is not None
                else (f" with sha256 {use.sha256}" if use.sha256 else "")
            )
            raise NotFound(
                f"no model named {use.name!r}{detail} (field {'.'.join(map(str, need.loc))}); "
                "see `imagefleet models list` or GET /v1/models"
            )
        if model.kind is not need.role.model_kind:
            raise InvalidField(
                need.loc,
                f"{use.name!r} is a {model.kind.value}, but {need.role.value} takes a "
                f"{need.role.model_kind.value}",
            )
        resolved.append(JobModel(need.role, model, need.weight))
    _check_bases(resolved, needs)
    return resolved


def _check_bases(resolved: list[JobModel], needs: Sequence[ModelNeed]) -> None:
    base = next((item.model.base for item in resolved if item.role is ModelRole.checkpoint), None)
    if base is None:
        return
    for item, need in zip(resolved, needs, strict=True):
        if item.model.base is not None and item.model.base is not base:
            raise InvalidField(
                need.loc,
                f"{item.model.name!r} is for {item.model.base.value}, but the checkpoint is "
                f"{base.value}; use a {item.role.value} made for {base.value}",
            )
