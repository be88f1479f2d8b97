"""The model registry: named, versioned file sets with a source, a sha256, a kind and the base
architecture they belong to."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Select, bindparam, func, insert, select

from imagefleet.protocol import ModelBase, ModelKind, ModelRole
from imagefleet.store.tables import models
from imagefleet.worker_protocol import ModelRef


@dataclass(frozen=True)
class Model:
    id: int
    name: str
    version: int
    kind: ModelKind
    source: str
    config_source: str | None
    config_sha256: str | None
    sha256: str
    size_bytes: int
    base: ModelBase | None = None
    format: str | None = None
    trigger_words: tuple[str, ...] = field(default_factory=tuple)

    def ref(self, role: ModelRole = ModelRole.checkpoint, weight: float | None = None) -> ModelRef:
        return ModelRef(
            name=self.name,
            version=self.version,
            kind=self.kind,
            base=self.base,
            role=role,
            weight=weight,
            format=self.format,
            trigger_words=list(self.trigger_words),
            source=self.source,
            sha256=self.sha256,
            size_bytes=self.size_bytes,
            config_source=self.config_source,
            config_sha256=self.config_sha256,
        )


def register_model(
    conn: Connection,
    *,
    name: str,
    kind: str,
    source: str,
    sha256: str,
    size_bytes: int,
    now: float,
    config_source: str | None = None,
    config_sha256: str | None = None,
    base: str | None = None,
    format: str | None = None,
    trigger_words: list[str] | tuple[str, ...] = (),
) -> Model:
    """Adds a version of `name`. Re-adding identical content returns the existing version."""
    latest = latest_model(conn, name)
    if latest and latest.sha256 == sha256 and latest.source == source:
        return latest
    version = (latest.version + 1) if latest else 1
    values = dict(
        name=name,
        version=version,
        kind=ModelKind(kind).value,
        source=source,
        config_source=config_source,
        config_sha256=config_sha256,
        sha256=sha256,
        size_bytes=size_bytes,
        created_at=now,
        base=ModelBase(base).value if base else None,
        format=format,
        trigger_words=json.dumps(list(trigger_words)) if trigger_words else None,
    )
    result = conn.execute(insert(models).values(**values))
    model_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
    assert model_id is not None
    return to_model({"id": model_id, **values})


def latest_model(conn: Connection, name: str) -> Model | None:
    row = (
        conn.execute(select(models).where(models.c.name == name).order_by(models.c.version.desc()))
        .mappings()
        .first()
    )
    return to_model(row) if row else None


def find_model(
    conn: Connection, name: str, version: int | None = None, sha256: str | None = None
) -> Model | None:
    """The named model at that version, or with that content, or its newest version."""
    params = {"name": name, "version": version, "sha": sha256}
    query = _find_model(version is not None, sha256 is not None)
    row = conn.execute(query, params).mappings().first()
    return to_model(row) if row else None


@functools.lru_cache(maxsize=4)
def _find_model(by_version: bool, by_sha256: bool) -> Select[Any]:
    """`find_model`'s query, built once per shape (every submit runs one per model it names)."""
    query = select(models).where(models.c.name == bindparam("name"))
    if by_version:
        query = query.where(models.c.version == bindparam("version"))
    if by_sha256:
        query = query.where(models.c.sha256 == bindparam("sha"))
    return query.order_by(models.c.version.desc())


def model_by_id(conn: Connection, model_id: int) -> Model:
    row = conn.execute(select(models).where(models.c.id == model_id)).mappings().one()
    return to_model(row)


def list_models(conn: Connection) -> list[Model]:
    """The newest version of every model name."""
    newest = (
        select(models.c.name, func.max(models.c.version).label("version"))
        .group_by(models.c.name)
        .subquery()
    )
    rows = conn.execute(
        select(models)
        .join(newest, (models.c.name == newest.c.name) & (models.c.version == newest.c.version))
        .order_by(models.c.name)
    ).mappings()
    return [to_model(row) for row in rows]


def to_model(row: object) -> Model:
    r = dict(row)  # type: ignore[call-overload]
    return Model(
        id=r["id"],
        name=r["name"],
        version=r["version"],
        kind=ModelKind(r["kind"]),
        source=r["source"],
        config_source=r["config_source"],
        config_sha256=r["config_sha256"],
        sha256=r["sha256"],
        size_bytes=r["size_bytes"],
        base=ModelBase(r["base"]) if r.get("base") else None,
        format=r.get("format"),
        trigger_words=tuple(json.loads(r["trigger_words"])) if r.get("trigger_words") else (),
    )
