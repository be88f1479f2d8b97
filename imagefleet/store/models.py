"""The model registry: named, versioned file sets with a source and a sha256."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, func, insert, select

from imagefleet.protocol import ModelRef
from imagefleet.store.tables import models


@dataclass(frozen=True)
class Model:
    id: int
    name: str
    version: int
    kind: str
    source: str
    config_source: str | None
    config_sha256: str | None
    sha256: str
    size_bytes: int

    def ref(self) -> ModelRef:
        return ModelRef(
            name=self.name,
            version=self.version,
            kind="checkpoint",
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
) -> Model:
    """Adds a version of `name`. Re-adding identical content returns the existing version."""
    latest = latest_model(conn, name)
    if latest and latest.sha256 == sha256 and latest.source == source:
        return latest
    version = (latest.version + 1) if latest else 1
    result = conn.execute(
        insert(models).values(
            name=name,
            version=version,
            kind=kind,
            source=source,
            config_source=config_source,
            config_sha256=config_sha256,
            sha256=sha256,
            size_bytes=size_bytes,
            created_at=now,
        )
    )
    model_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
    assert model_id is not None
    return Model(
        model_id, name, version, kind, source, config_source, config_sha256, sha256, size_bytes
    )


def latest_model(conn: Connection, name: str) -> Model | None:
    row = (
        conn.execute(select(models).where(models.c.name == name).order_by(models.c.version.desc()))
        .mappings()
        .first()
    )
    return _to_model(row) if row else None


def model_by_id(conn: Connection, model_id: int) -> Model:
    row = conn.execute(select(models).where(models.c.id == model_id)).mappings().one()
    return _to_model(row)


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
    return [_to_model(row) for row in rows]


def _to_model(row: object) -> Model:
    r = dict(row)  # type: ignore[call-overload]
    return Model(
        r["id"],
        r["name"],
        r["version"],
        r["kind"],
        r["source"],
        r["config_source"],
        r["config_sha256"],
        r["sha256"],
        r["size_bytes"],
    )
