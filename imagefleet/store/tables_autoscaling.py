"""The autoscaler's tables (registered on `tables.metadata`): pools, what the control loop last
decided per pool, its decision log, and leader leases."""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, Integer, String, Table, Text

from imagefleet.store.tables import metadata

# The pools the autoscaler manages: seeded from the pools file, edited through the admin API.
# `config` is the pool as JSON (scaling/pools.py `Pool`); `edited_at` is set by an API edit,
# which a restart's pools file then does not overwrite.
pools = Table(
    "pools",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("config", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("edited_at", Float),
)

# What the control loop last decided and saw per pool, readable from every replica.
pool_status = Table(
    "pool_status",
    metadata,
    Column("pool", String(64), primary_key=True),
    Column("desired", Integer, nullable=False),
    Column("current", Integer, nullable=False),
    Column("wanted", Integer, nullable=False),
    Column("actual", Integer),
    Column("queued", Integer, nullable=False),
    Column("running", Integer, nullable=False),
    Column("rule", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("history", Text, nullable=False),
    Column("decided_at", Float, nullable=False),
    Column("decided_by", String(200), nullable=False),
    Column("failures", Integer, nullable=False),
    Column("last_error", Text),
    Column("error_at", Float),
    Column("next_try_at", Float),
)

# Every decision that changed something (or failed), and each replacement of a bad node.
scaling_decisions = Table(
    "scaling_decisions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("pool", String(64), nullable=False),
    Column("action", String(16), nullable=False),
    Column("current", Integer, nullable=False),
    Column("desired", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    Column("instance_id", String(200)),
    Column("node_id", String(200)),
    Column("error", Text),
    Column("decided_by", String(200), nullable=False),
    Column("created_at", Float, nullable=False),
)
Index("ix_scaling_decisions_pool", scaling_decisions.c.pool, scaling_decisions.c.id)
Index("ix_scaling_decisions_node", scaling_decisions.c.node_id, scaling_decisions.c.action)

# Leader election: one row per duty; whoever holds an unexpired lease runs it.
leader_leases = Table(
    "leader_leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("acquired_at", Float, nullable=False),
)
