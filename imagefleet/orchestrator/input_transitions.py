"""Client transition: uploading an input file (init image, mask) that jobs then name by id.

The image is decoded in full here, once: nothing malformed is stored, and a worker never finds
out mid-job that an input is broken."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

from imagefleet.blocking import run_blocking
from imagefleet.errors import InvalidField
from imagefleet.images import EXTENSIONS, InvalidImage, inspect_image
from imagefleet.orchestrator.transitions import TransitionBase
from imagefleet.store import inputs as input_sql
from imagefleet.store.ids import new_id
from imagefleet.store.keys import ApiKey
from imagefleet.training.dataset import DATASET_CONTENT_TYPE, summarize_zip
from imagefleet.training.dataset_archive import DatasetError


class InputTransitions(TransitionBase):
    async def upload_input(
        self, owner: ApiKey, data: bytes, content_type: str
    ) -> input_sql.InputRow:
        """Checks and stores the image (or dataset zip); returns its record (its id is what
        jobs name)."""
        if content_type == DATASET_CONTENT_TYPE:
            return await self._upload_dataset(owner, data)
        try:
            info = await run_blocking(
                inspect_image, data, max_pixels=self.settings.max_input_pixels
            )
        except InvalidImage as exc:
            raise InvalidField(("body",), str(exc)) from exc
        if info.content_type != content_type:
            raise InvalidField(
                ("body",),
                f"the body is a {info.content_type} image but was sent as {content_type}",
            )
        input_id = new_id()
        key = f"inputs/{owner.id}/{input_id}.{EXTENSIONS[info.content_type]}"
        await self._file_store().put_stream(key, _once(data), len(data))
        row = input_sql.InputRow(
            id=input_id,
            owner_key_id=owner.id,
            key=key,
            content_type=info.content_type,
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            width=info.width,
            height=info.height,
            created_at=self.clock(),
        )
        await run_blocking(self._record_input, row)
        return row

    async def _upload_dataset(self, owner: ApiKey, data: bytes) -> input_sql.InputRow:
        """A training dataset (a zip of images and captions), validated in full here: corrupt
        archives, undecodable images and unsafe entries are a 422 before any job names it."""
        try:
            summary = await run_blocking(summarize_zip, data)
        except DatasetError as exc:
            problems = "; ".join(exc.problems[:20])
            raise InvalidField(("body",), f"{exc}{': ' + problems if problems else ''}") from exc
        input_id = new_id()
        key = f"inputs/{owner.id}/{input_id}.zip"
        await self._file_store().put_stream(key, _once(data), len(data))
        row = input_sql.InputRow(
            id=input_id,
            owner_key_id=owner.id,
            key=key,
            content_type=DATASET_CONTENT_TYPE,
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            width=0,
            height=0,
            created_at=self.clock(),
            images=summary.images,
            uncaptioned=summary.uncaptioned,
        )
        await run_blocking(self._record_input, row)
        return row

    def _record_input(self, row: input_sql.InputRow) -> None:
        with self.db.write() as conn:
            input_sql.insert_input(conn, row)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
