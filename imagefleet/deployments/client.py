"""Deployments from Python: the calls the CLI, the benchmark and tests make, on top of the
ordinary client (its key, retries and errors)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imagefleet.api_views import JobView
from imagefleet.client import ImageFleetClient
from imagefleet.deployments.package import pack
from imagefleet.deployments.protocol import DeploymentView, DeployResult


class Deployments:
    def __init__(self, client: ImageFleetClient) -> None:
        self.client = client

    def deploy(
        self,
        source: Path | bytes,
        name: str,
        *,
        alias: str | None = None,
        public: bool | None = None,
    ) -> DeployResult:
        """Packs the directory (or takes a packed package) and uploads it as a version."""
        data = source if isinstance(source, bytes) else pack(source)
        query: dict[str, Any] = {}
        if alias is not None:
            query["alias"] = alias
        if public is not None:
            query["public"] = "true" if public else "false"
        found = self.client._json(
            "PUT",
            f"/v1/deployments/{name}/versions",
            content=data,
            params=query,
            headers={"Content-Type": "application/gzip"},
        )
        return DeployResult.model_validate(found)

    def list(self) -> list[DeploymentView]:
        return [
            DeploymentView.model_validate(d) for d in self.client._json("GET", "/v1/deployments")
        ]

    def show(self, name: str) -> DeploymentView:
        return DeploymentView.model_validate(self.client._json("GET", f"/v1/deployments/{name}"))

    def promote(self, name: str, alias: str, version: str) -> DeploymentView:
        found = self.client._json(
            "POST", f"/v1/deployments/{name}/aliases/{alias}", json={"version": version}
        )
        return DeploymentView.model_validate(found)

    def rollback(self, name: str, alias: str) -> DeploymentView:
        found = self.client._json("POST", f"/v1/deployments/{name}/aliases/{alias}/rollback")
        return DeploymentView.model_validate(found)

    def run(
        self,
        name: str,
        inputs: dict[str, Any],
        *,
        version: str | None = None,
        alias: str | None = None,
        seed: int | None = None,
    ) -> JobView:
        body: dict[str, Any] = {"inputs": inputs}
        for field, value in (("version", version), ("alias", alias), ("seed", seed)):
            if value is not None:
                body[field] = value
        return JobView.model_validate(
            self.client._json("POST", f"/v1/deployments/{name}/runs", json=body)
        )
