"""Deployment transitions: deploy a version, promote an alias, roll it back, and resolve what
a run names. Each is one transaction holding the deployment's row lock, so two deploys of one
name number their versions in turn and an alias moves once per call.

Everything a package can get wrong is found before anything is written (size, archive
safety, manifest, `run` in pipeline.py by `ast`, JSON Schema, graph format and nodes, model
names): a refused deploy leaves nothing behind. The package is stored under its sha256 before
the transaction; a transaction that then fails leaves at most that file, which the same
content would write again.

Tenancy: a deployment belongs to the key that created it. Deploying needs the `deploy` scope
(or admin); moving aliases needs the owner (or an admin). A private deployment is invisible
(404) to other keys; a public one may be read and run by any client key.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy import Connection

from imagefleet.blocking import run_blocking
from imagefleet.deployments.manifest import Manifest, PipelineType, load_manifest
from imagefleet.deployments.package import PackageInvalid, package_files, package_sha256
from imagefleet.deployments.protocol import ALIAS_PATTERN, NAME_PATTERN
from imagefleet.errors import ApiError, Conflict, Forbidden, InvalidField, NotFound, PayloadTooLarge
from imagefleet.kinds.base import ModelNeed
from imagefleet.models.resolve import resolve_models
from imagefleet.orchestrator.transitions import TransitionBase
from imagefleet.protocol import ModelRole, ModelUse
from imagefleet.store import deployments as sql
from imagefleet.store.keys import ApiKey

DEPLOY_SCOPES = ("deploy", "admin")
LATEST = "latest"
DEFAULT_ALIASES = ("production", LATEST)


@dataclass(frozen=True)
class Deployed:
    deployment: sql.DeploymentRow
    version: sql.VersionRow
    created: bool
    aliases: list[sql.AliasRow]


@dataclass(frozen=True)
class Shown:
    deployment: sql.DeploymentRow
    versions: list[sql.VersionRow]
    aliases: list[sql.AliasRow]


def check_deployer(key: ApiKey) -> None:
    if key.scope not in DEPLOY_SCOPES:
        raise Forbidden(
            f"deploying needs a key with the deploy scope (or admin); this key's scope is "
            f"{key.scope!r}: create one with `imagefleet keys create --name NAME --scope deploy`"
        )


def check_name(name: str) -> str:
    if not re.match(NAME_PATTERN, name):
        raise InvalidField(
            ("path", "name"),
            f"{name!r} is not a deployment name: lowercase letters, digits, '.', '_' and '-', "
            "starting with a letter or digit, at most 100 characters",
        )
    return name


def check_alias(alias: str, loc: tuple[str | int, ...] = ("path", "alias")) -> str:
    if not re.match(ALIAS_PATTERN, alias):
        raise InvalidField(
            loc, f"{alias!r} is not an alias: lowercase letters, digits, '_' and '-' (max 64)"
        )
    return alias


def visible(row: sql.DeploymentRow | None, key: ApiKey, name: str) -> sql.DeploymentRow:
    """The deployment if this key may see it; the same 404 whether it is missing or private."""
    if row is None or not (row.public or row.owner_key_id == key.id or key.scope == "admin"):
        raise NotFound(f"no deployment {name!r}; `imagefleet deployments list` shows yours")
    return row


def model_needs(manifest: Manifest) -> list[ModelNeed]:
    return [
        ModelNeed(ModelRole(role), ModelUse.model_validate(use), ("body", "models", role, i))
        for role, uses in sorted(manifest.models.items())
        for i, use in enumerate(uses)
    ]


def find_version(conn: Connection, name: str, version: str) -> sql.VersionRow:
    found = sql.get_version(conn, name, version)
    if found is None:
        numbers = ", ".join(f"v{v.number}" for v in sql.versions(conn, name))
        raise NotFound(f"deployment {name!r} has no version {version!r} (it has {numbers})")
    return found


class DeploymentTransitions(TransitionBase):
    def validate(self, data: bytes) -> Manifest:
        """The package's manifest after every deploy-time check; 413/422 otherwise."""
        limit = self.settings.max_package_bytes
        if len(data) > limit:
            raise PayloadTooLarge(
                f"the package is {len(data)} bytes; the limit is {limit} "
                "(IMAGEFLEET_MAX_PACKAGE_BYTES). Keep weights out of it: register them as models"
            )
        try:
            manifest = load_manifest(package_files(data, max_bytes=limit))
        except PackageInvalid as exc:
            raise InvalidField(("body",), str(exc)) from exc
        if manifest.type is PipelineType.graph:
            from imagefleet.kinds.comfy import checked_graph

            try:
                checked_graph(manifest.graph)
            except ApiError as exc:
                raise InvalidField(("body", "graph.json"), f"graph.json: {exc}") from exc
        return manifest

    async def deploy(
        self, owner: ApiKey, name: str, data: bytes, alias: str | None, public: bool | None
    ) -> Deployed:
        check_deployer(owner)
        check_name(name)
        if alias is not None:
            check_alias(alias, ("query", "alias"))
        manifest = await run_blocking(self.validate, data)
        version = package_sha256(data)
        key = f"deployments/{name}/{version}.tar.gz"
        await run_blocking(self._check_models, manifest)
        await self._file_store().put_stream(key, _once(data), len(data))
        return await run_blocking(
            self._record, owner, name, version, manifest, key, len(data), alias, public
        )

    def _check_models(self, manifest: Manifest) -> None:
        needs = model_needs(manifest)
        if needs:
            with self.db.read() as conn:
                resolve_models(conn, needs)

    def _record(
        self,
        owner: ApiKey,
        name: str,
        version: str,
        manifest: Manifest,
        key: str,
        size: int,
        alias: str | None,
        public: bool | None,
    ) -> Deployed:
        now = self.clock()
        with self.db.write() as conn:
            deployment = sql.get_deployment(conn, name, lock=True)
            if deployment is None:
                sql.insert_deployment(conn, sql.DeploymentRow(name, owner.id, bool(public), now))
                deployment = sql.get_deployment(conn, name, lock=True)
                assert deployment is not None  # ours, or a concurrent first deploy's
            if deployment.owner_key_id != owner.id:
                raise Conflict(
                    f"the name {name!r} belongs to another key's deployment; deploy under "
                    "another --name"
                )
            elif public is not None and public != deployment.public:
                sql.set_public(conn, name, public)
                deployment = sql.DeploymentRow(name, owner.id, public, deployment.created_at)
            row = sql.get_version(conn, name, version)
            created = row is None
            if row is None:
                row = sql.insert_version(
                    conn,
                    name=name,
                    version=version,
                    manifest=manifest,
                    package_key=key,
                    size_bytes=size,
                    now=now,
                )
                sql.point_alias(conn, name, LATEST, version, now)
            if alias is not None:
                sql.point_alias(conn, name, alias, version, now)
            return Deployed(deployment, row, created, sql.aliases(conn, name))

    def list_deployments(self, key: ApiKey) -> list[Shown]:
        with self.db.read() as conn:
            rows = sql.visible_deployments(conn, key.id, everything=key.scope == "admin")
            return [Shown(r, sql.versions(conn, r.name), sql.aliases(conn, r.name)) for r in rows]

    def show(self, key: ApiKey, name: str) -> Shown:
        check_name(name)
        with self.db.read() as conn:
            row = visible(sql.get_deployment(conn, name), key, name)
            return Shown(row, sql.versions(conn, name), sql.aliases(conn, name))

    def promote(self, key: ApiKey, name: str, alias: str, version: str) -> Shown:
        """Points `alias` at `version` (the alias remembers where it pointed, for rollback)."""
        check_name(name)
        check_alias(alias)
        with self.db.write() as conn:
            row = self._movable(conn, key, name)
            target = find_version(conn, name, version)
            sql.point_alias(conn, name, alias, target.version, self.clock())
            return Shown(row, sql.versions(conn, name), sql.aliases(conn, name))

    def rollback(self, key: ApiKey, name: str, alias: str) -> Shown:
        """Points `alias` back at the version it pointed at before its last move."""
        check_name(name)
        check_alias(alias)
        with self.db.write() as conn:
            row = self._movable(conn, key, name)
            current = sql.get_alias(conn, name, alias)
            if current is None:
                raise NotFound(f"deployment {name!r} has no alias {alias!r}")
            if current.previous_version is None:
                raise Conflict(
                    f"alias {alias!r} of {name!r} has pointed at one version only; there is "
                    "nothing to roll back to (promote a version instead)"
                )
            sql.roll_back_alias(conn, current, self.clock())
            return Shown(row, sql.versions(conn, name), sql.aliases(conn, name))

    def _movable(self, conn: Connection, key: ApiKey, name: str) -> sql.DeploymentRow:
        row = visible(sql.get_deployment(conn, name, lock=True), key, name)
        if row.owner_key_id != key.id and key.scope != "admin":
            raise Forbidden(f"only the owner of {name!r} may move its aliases")
        return row


def resolve_run(
    conn: Connection, key: ApiKey, name: str, version: str | None, alias: str | None
) -> tuple[sql.DeploymentRow, sql.VersionRow]:
    """The version a run names: `version`, else `alias`, else production, else latest."""
    deployment = visible(sql.get_deployment(conn, name), key, name)
    if version is not None:
        return deployment, find_version(conn, name, version)
    wanted = (alias,) if alias is not None else DEFAULT_ALIASES
    for candidate in wanted:
        found = sql.get_alias(conn, name, candidate)
        if found is not None:
            row = sql.get_version(conn, name, found.version)
            assert row is not None
            return deployment, row
    known = ", ".join(a.alias for a in sql.aliases(conn, name)) or "none"
    raise NotFound(f"deployment {name!r} has no alias {wanted[0]!r} (its aliases: {known})")


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
