"""Binding a run of a deployment at submit (the workflow kind's `bind`, in the submit's
transaction): the named version is resolved, the inputs are checked against its schema, and
the job is made concrete.

- A graph deployment becomes a comfy job: the inputs are written into the graph where the
  manifest says, and the comfy kind checks the result as it checks any graph.
- A Python deployment stays a workflow job carrying the exact version, its models and its
  package, which the job reads as an input. Inputs belong to their uploader, so the package
  is recorded once per caller as an input of theirs (same stored file, same sha256): a public
  deployment's runs belong to, and are billed to, whoever submits them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select

from imagefleet.deployments.manifest import PipelineType, check_inputs, inject
from imagefleet.orchestrator.deployments import resolve_run
from imagefleet.protocol import ModelUse
from imagefleet.store import inputs as input_sql
from imagefleet.store.ids import new_id
from imagefleet.store.keys import ApiKey
from imagefleet.store.tables import inputs

if TYPE_CHECKING:
    from imagefleet.kinds.base import KindSpec
    from imagefleet.kinds.workflow import WorkflowParams

PACKAGE_CONTENT_TYPE = "application/gzip"


def bind_run(
    conn: Connection, caller: ApiKey, params: WorkflowParams, workflow: KindSpec
) -> tuple[KindSpec, Any]:
    _, version = resolve_run(conn, caller, params.deployment, params.version, params.alias)
    manifest = version.manifest
    check_inputs(manifest.input_schema, params.inputs, ("body", "params", "inputs"))
    if manifest.type is PipelineType.graph:
        from imagefleet.kinds.comfy import SPEC as COMFY
        from imagefleet.kinds.comfy import ComfyParams

        assert manifest.graph is not None
        graph = inject(manifest.graph, manifest.inputs, params.inputs)
        return COMFY, ComfyParams(graph=graph)
    package = _package_input(conn, caller, version.package_key, version.version, version.size_bytes)
    bound = params.model_copy(
        update={
            "version": version.version,
            "alias": None,
            "number": version.number,
            "package": package,
            "models": {
                role: [ModelUse.model_validate(use) for use in uses]
                for role, uses in manifest.models.items()
            },
            "requirements": list(manifest.requirements),
            "outputs": manifest.outputs,
        }
    )
    return workflow, bound


def _package_input(conn: Connection, caller: ApiKey, key: str, sha256: str, size: int) -> str:
    """The caller's input record of this package, made on their first run of the version."""
    found = conn.execute(
        select(inputs.c.id).where(inputs.c.owner_key_id == caller.id, inputs.c.key == key)
    ).scalar()
    if found is not None:
        return str(found)
    row = input_sql.InputRow(
        id=new_id(),
        owner_key_id=caller.id,
        key=key,
        content_type=PACKAGE_CONTENT_TYPE,
        size_bytes=size,
        sha256=sha256,
        width=0,
        height=0,
        created_at=time.time(),
    )
    input_sql.insert_input(conn, row)
    return row.id
