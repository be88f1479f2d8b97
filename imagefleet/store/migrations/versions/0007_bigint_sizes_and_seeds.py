"""64-bit sizes and seeds: model files pass 2 GiB and seeds reach 2^32 - 1, both beyond a
32-bit INTEGER on PostgreSQL.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.alter_column("size_bytes", type_=sa.BigInteger, existing_nullable=False)
    with op.batch_alter_table("artifacts") as batch:
        batch.alter_column("size_bytes", type_=sa.BigInteger, existing_nullable=False)
        batch.alter_column("seed", type_=sa.BigInteger, existing_nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("artifacts") as batch:
        batch.alter_column("seed", type_=sa.Integer, existing_nullable=True)
        batch.alter_column("size_bytes", type_=sa.Integer, existing_nullable=False)
    with op.batch_alter_table("models") as batch:
        batch.alter_column("size_bytes", type_=sa.Integer, existing_nullable=False)
