"""Versioned deployments: deployments (a name owned by a key, private or public), their
immutable versions (a package by its sha256) and aliases (with the version before, for
rollback).

Revision ID: deployments
Revises: worker_state_fold
"""

import sqlalchemy as sa
from alembic import op

revision = "deployments"
down_revision = "worker_state_fold"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("owner_key_id", sa.String(32), sa.ForeignKey("api_keys.id"), nullable=False),
        sa.Column("public", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "deployment_versions",
        sa.Column("name", sa.String(100), sa.ForeignKey("deployments.name"), primary_key=True),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("manifest", sa.Text, nullable=False),
        sa.Column("package_key", sa.String(400), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "deployment_aliases",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("alias", sa.String(64), primary_key=True),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("previous_version", sa.String(64)),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.ForeignKeyConstraint(
            ["name", "version"], ["deployment_versions.name", "deployment_versions.version"]
        ),
    )


def downgrade() -> None:
    op.drop_table("deployment_aliases")
    op.drop_table("deployment_versions")
    op.drop_table("deployments")
