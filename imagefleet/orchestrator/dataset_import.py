"""Client transition: a train_lora dataset named by URL or ``s3://`` is fetched and validated
at submit, then stored as an ordinary dataset input (input_transitions.py), so the job that
reaches a worker names an input id exactly as if the zip had been uploaded.

Why here and not on the worker: a dataset that cannot be fetched or read is the submitter's
mistake, and a 422 at submit says so at once; found on a worker it would cost a GPU lease and
a final failure later. The fetch is bounded like an upload (`max_input_bytes`, a total
deadline, no more than a few redirects) and a URL goes through netguard, every redirect hop
too, unless the operator allows private addresses (`dataset_allow_private`). An ``s3://``
object is read with the orchestrator's own S3 credentials, so only buckets the operator lists
(`dataset_s3_buckets`) are read, and never the artifact store's own prefix: that would let a
client copy another client's files.

The same bytes imported twice by one owner give the same input (looked up by sha256), so an
idempotent retry of the submit sends the same params and replays the first job.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import httpx
from sqlalchemy import select

from imagefleet import netguard
from imagefleet.blocking import run_blocking
from imagefleet.errors import InvalidField
from imagefleet.orchestrator.input_transitions import InputTransitions
from imagefleet.store import inputs as input_sql
from imagefleet.store.keys import ApiKey
from imagefleet.store.tables import inputs as inputs_table
from imagefleet.training.dataset import DATASET_CONTENT_TYPE
from imagefleet.training.dataset_source import DatasetSource, s3_location

MAX_REDIRECTS = 3
LOC = ("body", "params", "dataset")
PRIVATE_HINT = "set IMAGEFLEET_DATASET_ALLOW_PRIVATE=true to fetch datasets from private networks"


class DatasetImportError(Exception):
    """The dataset source could not be fetched; the message says why (a 422 at submit)."""


class DatasetImports(InputTransitions):
    async def import_dataset_sources(self, owner: ApiKey, job: Any) -> Any:
        """The job with a url/s3 `params.dataset` replaced by the id of the stored, validated
        input; any other job unchanged."""
        params = getattr(job, "params", None)
        source = getattr(params, "dataset", None)
        if not isinstance(source, DatasetSource):
            return job
        field = "url" if source.url is not None else "s3"
        try:
            data = await asyncio.wait_for(
                self._fetch_source(source), self.settings.dataset_fetch_timeout_seconds
            )
        except TimeoutError:
            raise InvalidField(
                (*LOC, field),
                f"fetching the dataset took longer than "
                f"{self.settings.dataset_fetch_timeout_seconds:g} s",
            ) from None
        except DatasetImportError as exc:
            raise InvalidField((*LOC, field), str(exc)) from exc
        digest = hashlib.sha256(data).hexdigest()
        if source.sha256 is not None and digest != source.sha256:
            raise InvalidField(
                (*LOC, "sha256"),
                f"the fetched dataset has sha256 {digest}, not the {source.sha256} given",
            )
        row = await run_blocking(self._imported_before, owner, digest)
        if row is None:
            try:
                row = await self.upload_input(owner, data, DATASET_CONTENT_TYPE)
            except InvalidField as exc:  # the upload's 422, placed on the field that named it
                raise InvalidField((*LOC, field), f"the fetched dataset: {exc.message}") from exc
        assert params is not None
        return job.model_copy(update={"params": params.model_copy(update={"dataset": row.id})})

    def _imported_before(self, owner: ApiKey, sha256: str) -> input_sql.InputRow | None:
        with self.db.read() as conn:
            found = (
                conn.execute(
                    select(inputs_table)
                    .where(
                        inputs_table.c.owner_key_id == owner.id,
                        inputs_table.c.sha256 == sha256,
                        inputs_table.c.content_type == DATASET_CONTENT_TYPE,
                    )
                    .order_by(inputs_table.c.created_at)
                    .limit(1)
                )
                .mappings()
                .first()
            )
        return input_sql.InputRow(**found) if found is not None else None

    async def _fetch_source(self, source: DatasetSource) -> bytes:
        limit = self.settings.max_input_bytes
        if source.url is not None:
            return await fetch_url(
                source.url, max_bytes=limit, allow_private=self.settings.dataset_allow_private
            )
        assert source.s3 is not None
        bucket, key = s3_location(source.s3)
        self._check_bucket(bucket, key)
        reader = getattr(self._file_store(), "read_external", None)
        if reader is None:
            raise DatasetImportError(
                "this orchestrator keeps its files on local disk and has no S3 credentials to "
                "read s3:// datasets with: give a url, or upload the zip"
            )
        try:
            data: bytes = await run_blocking(reader, bucket, key, limit)
        except (FileNotFoundError, ValueError) as exc:
            raise DatasetImportError(str(exc)) from exc
        except Exception as exc:  # the store's errors name the bucket and what went wrong
            raise DatasetImportError(f"reading {source.s3} failed: {exc}") from exc
        return data

    def _check_bucket(self, bucket: str, key: str) -> None:
        allowed = {name.strip() for name in self.settings.dataset_s3_buckets.split(",")}
        if bucket not in allowed - {""}:
            raise DatasetImportError(
                f"bucket {bucket!r} is not one this orchestrator reads datasets from "
                "(IMAGEFLEET_DATASET_S3_BUCKETS)"
            )
        config = getattr(self._file_store(), "config", None)
        prefix = getattr(config, "prefix", "")
        if getattr(config, "bucket", None) == bucket and (
            not prefix or key == prefix or key.startswith(prefix + "/")
        ):
            raise DatasetImportError(
                "datasets cannot be read from the artifact store's own files: upload the zip "
                "or name an object outside them"
            )


async def fetch_url(url: str, *, max_bytes: int, allow_private: bool) -> bytes:
    """GETs ``url`` (following at most MAX_REDIRECTS redirects, each hop checked by netguard
    unless ``allow_private``) and returns at most ``max_bytes`` of body, or raises
    DatasetImportError."""
    timeout = httpx.Timeout(30.0, connect=10.0)
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
        current = _parsed(url)
        for _hop in range(MAX_REDIRECTS + 1):
            if current.scheme not in ("http", "https"):
                raise DatasetImportError(f"{current} is not an http(s) URL")
            if not allow_private:
                try:
                    netguard.check_public_host(current.host, PRIVATE_HINT)
                except netguard.PrivateAddressError as exc:
                    raise DatasetImportError(str(exc)) from exc
            try:
                async with client.stream("GET", current) as response:
                    if response.is_redirect and "location" in response.headers:
                        current = _parsed(current.join(response.headers["location"]))
                        continue
                    if response.status_code != 200:
                        raise DatasetImportError(
                            f"{_shown(current)} answered HTTP {response.status_code}"
                        )
                    return await _bounded_body(response, max_bytes, current)
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                raise DatasetImportError(
                    f"{_shown(current)} could not be fetched: {type(exc).__name__}: {exc}"
                ) from exc
    raise DatasetImportError(f"{_shown(_parsed(url))} redirects more than {MAX_REDIRECTS} times")


def _parsed(url: str | httpx.URL) -> httpx.URL:
    """The URL as httpx reads it; what it cannot read (a bad port, an invalid IDNA name) is the
    submitter's mistake, not a server error."""
    try:
        parsed = httpx.URL(url)
        parsed.host.encode("idna")
    except (httpx.InvalidURL, ValueError, UnicodeError) as exc:
        raise DatasetImportError(f"the dataset URL cannot be used: {exc}") from exc
    return parsed


async def _bounded_body(response: httpx.Response, max_bytes: int, url: httpx.URL) -> bytes:
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise DatasetImportError(_too_large(url, max_bytes))
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > max_bytes:
            raise DatasetImportError(_too_large(url, max_bytes))
    return bytes(body)


def _too_large(url: httpx.URL, max_bytes: int) -> str:
    return (
        f"{_shown(url)} is larger than {max_bytes} bytes, the most a dataset may hold "
        "(IMAGEFLEET_MAX_INPUT_BYTES)"
    )


def _shown(url: httpx.URL) -> str:
    """The URL without its query: presigned URLs carry credentials there."""
    return str(url.copy_with(query=None, fragment=None))
