"""Deployments, their versions and aliases: plain rows and one named query each. The
transitions that sequence them (deploy, promote, rollback, resolve a run) are in
orchestrator/deployments.py."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from imagefleet.deployments.manifest import Manifest
from imagefleet.store.tables_deployments import deployment_aliases, deployment_versions, deployments


@dataclass(frozen=True)
class DeploymentRow:
    name: str
    owner_key_id: str
    public: bool
    created_at: float


@dataclass(frozen=True)
class VersionRow:
    name: str
    version: str
    number: int
    type: str
    manifest: Manifest
    package_key: str
    size_bytes: int
    created_at: float


@dataclass(frozen=True)
class AliasRow:
    name: str
    alias: str
    version: str
    previous_version: str | None
    updated_at: float


def get_deployment(conn: Connection, name: str, *, lock: bool = False) -> DeploymentRow | None:
    query = select(deployments).where(deployments.c.name == name)
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).mappings().first()
    return DeploymentRow(**row) if row else None


def insert_deployment(conn: Connection, row: DeploymentRow) -> None:
    """Creates the deployment unless a concurrent first deploy of the same name just did
    (ON CONFLICT DO NOTHING): the caller then locks whichever row won and checks its owner."""
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = dialect_insert(deployments).values(**row.__dict__)
    conn.execute(statement.on_conflict_do_nothing(index_elements=[deployments.c.name]))


def set_public(conn: Connection, name: str, public: bool) -> None:
    conn.execute(update(deployments).where(deployments.c.name == name).values(public=public))


def visible_deployments(conn: Connection, key_id: str, *, everything: bool) -> list[DeploymentRow]:
    """The key's own deployments and the public ones (every one for an admin)."""
    query = select(deployments).order_by(deployments.c.name)
    if not everything:
        query = query.where((deployments.c.owner_key_id == key_id) | deployments.c.public)
    return [DeploymentRow(**row) for row in conn.execute(query).mappings()]


def get_version(conn: Connection, name: str, version: str) -> VersionRow | None:
    """A version by its sha256, or by a unique prefix of it (at least 8 characters), or by
    its number (`3` or `v3`)."""
    query = select(deployment_versions).where(deployment_versions.c.name == name)
    number = version.removeprefix("v")
    if number.isdigit() and len(number) < 8:
        query = query.where(deployment_versions.c.number == int(number))
    elif not re.fullmatch(r"[0-9a-f]{8,64}", version):
        return None
    elif len(version) == 64:
        query = query.where(deployment_versions.c.version == version)
    else:
        query = query.where(deployment_versions.c.version.startswith(version, autoescape=True))
    rows = list(conn.execute(query.limit(2)).mappings())
    return _version(rows[0]) if len(rows) == 1 else None


def versions(conn: Connection, name: str) -> list[VersionRow]:
    query = (
        select(deployment_versions)
        .where(deployment_versions.c.name == name)
        .order_by(deployment_versions.c.number)
    )
    return [_version(row) for row in conn.execute(query).mappings()]


def insert_version(
    conn: Connection,
    *,
    name: str,
    version: str,
    manifest: Manifest,
    package_key: str,
    size_bytes: int,
    now: float,
) -> VersionRow:
    """Adds the next numbered version (callers hold the deployment's row lock)."""
    latest = conn.execute(
        select(func.max(deployment_versions.c.number)).where(deployment_versions.c.name == name)
    ).scalar()
    row = VersionRow(
        name=name,
        version=version,
        number=(latest or 0) + 1,
        type=manifest.type.value,
        manifest=manifest,
        package_key=package_key,
        size_bytes=size_bytes,
        created_at=now,
    )
    values: dict[str, Any] = {**row.__dict__, "manifest": json.dumps(manifest.to_json())}
    conn.execute(insert(deployment_versions).values(**values))
    return row


def aliases(conn: Connection, name: str) -> list[AliasRow]:
    query = (
        select(deployment_aliases)
        .where(deployment_aliases.c.name == name)
        .order_by(deployment_aliases.c.alias)
    )
    return [AliasRow(**row) for row in conn.execute(query).mappings()]


def get_alias(conn: Connection, name: str, alias: str) -> AliasRow | None:
    query = select(deployment_aliases).where(
        deployment_aliases.c.name == name, deployment_aliases.c.alias == alias
    )
    row = conn.execute(query).mappings().first()
    return AliasRow(**row) if row else None


def point_alias(conn: Connection, name: str, alias: str, version: str, now: float) -> AliasRow:
    """Points the alias at `version`, remembering where it pointed (a no-op when it already
    points there, so re-deploying the same content keeps the rollback target)."""
    current = get_alias(conn, name, alias)
    if current is None:
        row = AliasRow(name, alias, version, None, now)
        conn.execute(insert(deployment_aliases).values(**row.__dict__))
        return row
    if current.version == version:
        return current
    conn.execute(
        update(deployment_aliases)
        .where(deployment_aliases.c.name == name, deployment_aliases.c.alias == alias)
        .values(version=version, previous_version=current.version, updated_at=now)
    )
    return AliasRow(name, alias, version, current.version, now)


def roll_back_alias(conn: Connection, current: AliasRow, now: float) -> AliasRow:
    """The alias back at its previous version; the version it leaves becomes the previous one,
    so a second rollback undoes the first."""
    assert current.previous_version is not None
    conn.execute(
        update(deployment_aliases)
        .where(
            deployment_aliases.c.name == current.name,
            deployment_aliases.c.alias == current.alias,
            deployment_aliases.c.version == current.version,
        )
        .values(version=current.previous_version, previous_version=current.version, updated_at=now)
    )
    return AliasRow(current.name, current.alias, current.previous_version, current.version, now)


def _version(row: Any) -> VersionRow:
    values = dict(row)
    values["manifest"] = Manifest.from_json(json.loads(values["manifest"]))
    return VersionRow(**values)
