"""Scheduling state shared by every orchestrator replica (registered on `tables.metadata`).

`owner_service`: when each owner last had a job claimed, for the policy's round robin between
owners (`FleetView.served_at`). It lived in each replica's memory before, so with two replicas
each took turns only among the owners it happened to serve; in the database every replica
reads the same turns. One row per owner that ever had a job claimed (bounded by the API keys,
never by the queue), written once per claim.
"""

from __future__ import annotations

from sqlalchemy import Column, Float, String, Table

from imagefleet.store.tables import metadata

owner_service = Table(
    "owner_service",
    metadata,
    Column("owner_key_id", String(32), primary_key=True),
    Column("served_at", Float, nullable=False),
)
