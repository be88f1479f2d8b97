"""workflow: a run of a versioned deployment (a Python pipeline or a ComfyUI graph; see
docs/workflows.md, "Deployments").

A client names the deployment and, optionally, a version or an alias (default `production`,
else `latest`). At submit `bind` resolves them in the submit's transaction
(orchestrator/deployment_runs.py): the inputs are checked against the version's JSON Schema
(422 naming the field); a graph deployment's inputs are injected into its graph and the job
becomes a plain comfy job (checked by the comfy kind as any graph is); a Python deployment
stays a workflow job whose params carry the exact version, the package (an input of the job,
fetched and verified by the worker like any input), the models of its manifest and its
output count. The version is the job's `warm_key`, so workers that keep it warm get its runs.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from imagefleet.kinds.base import (
    InputInfo,
    InputNeed,
    KindSpec,
    Limits,
    Loc,
    ModelNeed,
    OutputSpec,
    Requirements,
)
from imagefleet.protocol import MAX_SEED, JobSubmission, ModelRole, ModelUse, Strict

PARAMS_LOC: Loc = ("body", "params")
PACKAGE_INPUT = "package"
MEDIA_TYPES = ("image/png", "text/plain", "application/json")
EXTENSIONS = {"image/png": "png", "text/plain": "txt", "application/json": "json"}


class WorkflowParams(Strict):
    deployment: str = Field(min_length=1, max_length=100, description="The deployment's name.")
    version: str | None = Field(
        None,
        max_length=64,
        description="A version: its sha256 (or a prefix of 8+ characters) or number (`v2`). "
        "The server records the exact sha256 here.",
    )
    alias: str | None = Field(
        None, max_length=64, description="An alias instead (default production, else latest)."
    )
    inputs: dict[str, Any] = Field(
        default_factory=dict, description="Checked against the version's input schema."
    )
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Random when absent.")
    # Set by the server at submit (whatever a client sends here is replaced).
    number: int | None = Field(None, description="Set by the server: the version's number.")
    package: str | None = Field(None, description="Set by the server: the package's input id.")
    models: dict[str, list[ModelUse]] = Field(
        default_factory=dict, description="Set by the server: the manifest's models by role."
    )
    requirements: list[str] = Field(
        default_factory=list, description="Set by the server: the manifest's requirements."
    )
    outputs: int = Field(1, ge=1, le=16, description="Set by the server: files a run makes.")


class WorkflowJob(JobSubmission):
    """A run of a deployment, as submitted."""

    kind: Literal["workflow"] = "workflow"
    params: WorkflowParams


class Workflow(KindSpec):
    name = "workflow"
    submission = WorkflowJob
    summary = "Run a version of a deployment (a Python pipeline or a ComfyUI graph)."
    params_model = WorkflowParams

    def bind(self, conn: Any, owner: Any, params: WorkflowParams) -> tuple[KindSpec, Any]:
        # Imported here: the worker and the client use this module without the orchestrator.
        from imagefleet.orchestrator.deployment_runs import bind_run

        return bind_run(conn, owner, params, self)

    def admit(
        self, params: WorkflowParams, limits: Limits, inputs: Mapping[str, InputInfo]
    ) -> WorkflowParams:
        if params.seed is None:
            params = params.model_copy(update={"seed": secrets.randbelow(MAX_SEED + 1)})
        return params

    def requirements(self, params: WorkflowParams) -> Requirements:
        if params.package is None:  # not bound yet: submit binds before it asks again
            return Requirements()
        needs = tuple(
            ModelNeed(ModelRole(role), use, (*PARAMS_LOC, "models", role, index))
            for role, uses in sorted(params.models.items())
            for index, use in enumerate(uses)
        )
        package = InputNeed(PACKAGE_INPUT, params.package, (*PARAMS_LOC, "deployment"))
        return Requirements(
            models=needs,
            inputs=(package,),
            cost_units=1.0,
            warm_key=f"deployment:{params.version}",
        )

    def outputs(self, params: WorkflowParams) -> OutputSpec:
        return OutputSpec(count=params.outputs, media_types=MEDIA_TYPES, extensions=EXTENSIONS)


SPEC = Workflow()
