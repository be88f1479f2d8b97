"""The deployments' tables (issue 15), on the same metadata as tables.py (which imports this
module, so migrations and tests see them). A deployment is a name owned by one key; its
versions are immutable packages named by their sha256; aliases point at versions and remember
the version they pointed at before, so a rollback is one update."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Integer,
    String,
    Table,
    Text,
    false,
)

from imagefleet.store.tables import metadata

deployments = Table(
    "deployments",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("owner_key_id", String(32), ForeignKey("api_keys.id"), nullable=False),
    Column("public", Boolean, nullable=False, server_default=false()),
    Column("created_at", Float, nullable=False),
)

deployment_versions = Table(
    "deployment_versions",
    metadata,
    Column("name", String(100), ForeignKey("deployments.name"), primary_key=True),
    Column("version", String(64), primary_key=True),  # the package's sha256
    Column("number", Integer, nullable=False),  # 1, 2, ... in deploy order, for people
    Column("type", String(16), nullable=False),
    Column("manifest", Text, nullable=False),  # JSON (deployments.manifest.Manifest)
    Column("package_key", String(400), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),
)

deployment_aliases = Table(
    "deployment_aliases",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("alias", String(64), primary_key=True),
    Column("version", String(64), nullable=False),
    Column("previous_version", String(64)),
    Column("updated_at", Float, nullable=False),
    ForeignKeyConstraint(
        ["name", "version"], ["deployment_versions.name", "deployment_versions.version"]
    ),
)
