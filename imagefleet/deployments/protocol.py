"""The deployments' wire models, shared by the API, the CLI and the Python client (kept out of
imagefleet/protocol.py, which every kind shares)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from imagefleet.protocol import MAX_SEED, Strict

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,99}$"
ALIAS_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class VersionView(BaseModel):
    version: str = Field(description="The package's sha256: the version's immutable id.")
    number: int = Field(description="1, 2, ... in deploy order.")
    type: str = Field(description="python or graph.")
    size_bytes: int
    created_at: datetime
    input_schema: dict[str, Any]
    models: dict[str, list[Any]]
    requirements: list[str]
    outputs: int


class AliasView(BaseModel):
    alias: str
    version: str
    number: int
    previous_version: str | None = Field(None, description="Where a rollback takes it.")
    updated_at: datetime


class DeploymentView(BaseModel):
    name: str
    public: bool = Field(description="Any client may run a public deployment.")
    owned: bool = Field(description="Whether the calling key owns it (may deploy and promote).")
    created_at: datetime
    aliases: list[AliasView]
    versions: list[VersionView] = Field(description="Oldest first.")


class DeployResult(BaseModel):
    name: str
    version: VersionView
    created: bool = Field(description="False: identical content was deployed before.")
    aliases: list[AliasView]


class PromoteRequest(Strict):
    version: str = Field(
        min_length=1, max_length=64, description="sha256, a prefix (8+), or a number (v2)."
    )


class RunRequest(Strict):
    inputs: dict[str, Any] = Field(default_factory=dict)
    version: str | None = Field(None, max_length=64)
    alias: str | None = Field(None, max_length=64)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
