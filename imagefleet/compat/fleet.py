"""What both compatibility APIs do with the fleet: store base64 or uploaded images as inputs,
submit jobs, wait for their end on the event bus, and read their outputs back.

A client that goes away while its request waits cancels the request's jobs: nobody is left to
receive the images (these APIs hand out no job id to poll), so running them on would only
spend GPU time. A job that already ended is left as it is."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import io
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from PIL import Image

from imagefleet.api_views import JobView
from imagefleet.blocking import run_blocking
from imagefleet.errors import ApiError, InvalidField, JobDidNotSucceed, JobStillRunning
from imagefleet.images import InvalidImage, inspect_image
from imagefleet.orchestrator.events import EventBus, wait_for_end
from imagefleet.orchestrator.lifecycle import JobLifecycle
from imagefleet.orchestrator.routes_client import render_jobs
from imagefleet.protocol import JobStatus
from imagefleet.store.jobs import JobRow
from imagefleet.store.keys import ApiKey

log = logging.getLogger(__name__)


class ClientGone(ApiError):
    """499 (nginx's "client closed request"): the caller hung up while its jobs ran, and they
    were cancelled. Nobody reads this answer; it names the jobs for the access log."""

    status = 499


@dataclass(frozen=True)
class Finished:
    """A succeeded job with its output files, in index order."""

    view: JobView
    files: list[bytes]


def lifecycle_of(request: Request) -> JobLifecycle:
    lifecycle: JobLifecycle = request.app.state.lifecycle
    return lifecycle


async def store_image(
    request: Request, key: ApiKey, data: bytes, loc: tuple[str | int, ...]
) -> tuple[str, int, int]:
    """Stores an image as an input of this key (checked as POST /v1/inputs checks it);
    returns its id, width and height."""
    lifecycle = lifecycle_of(request)
    try:
        info = await run_blocking(
            inspect_image, data, max_pixels=lifecycle.settings.max_input_pixels
        )
    except InvalidImage as exc:
        raise InvalidField(loc, str(exc)) from exc
    row = await lifecycle.upload_input(key, data, info.content_type)
    return row.id, row.width, row.height


def decode_base64_image(value: str, loc: tuple[str | int, ...]) -> bytes:
    """A base64 image as A1111 clients send it, with or without a `data:...;base64,` prefix."""
    text = value.split(",", 1)[1] if value.startswith("data:") else value
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidField(loc, f"not base64-encoded image data ({exc})") from exc


def encode_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def alpha_to_mask(data: bytes) -> bytes | None:
    """A grey-scale inpaint mask (white: repaint) from an image's transparency, as the OpenAI
    edits endpoint reads masks: fully transparent pixels are the ones to edit. None when the
    image has no transparent pixel."""
    with Image.open(io.BytesIO(data)) as image:
        if "A" not in image.getbands() and "transparency" not in image.info:
            return None
        alpha = image.convert("RGBA").getchannel("A")
    mask = alpha.point(lambda a: 255 if a == 0 else 0)
    if mask.getbbox() is None:
        return None
    out = io.BytesIO()
    mask.save(out, format="PNG")
    return out.getvalue()


def white_mask(width: int, height: int) -> bytes:
    """A mask that repaints everything (an edit without a mask or transparency)."""
    out = io.BytesIO()
    Image.new("L", (width, height), 255).save(out, format="PNG")
    return out.getvalue()


async def submit_all(request: Request, key: ApiKey, jobs: list[Any]) -> list[JobRow]:
    lifecycle = lifecycle_of(request)
    rows = []
    for job in jobs:
        row, _ = await run_blocking(lifecycle.submit, key, job)
        rows.append(row)
    return rows


async def wait_all(request: Request, key: ApiKey, rows: list[JobRow]) -> list[Finished]:
    """Waits for every job, all within one `compat_wait_seconds`; 504 naming the jobs still
    running, 502 for a job that failed or was cancelled; if the client hangs up first, its jobs
    are cancelled (`ClientGone`)."""
    lifecycle = lifecycle_of(request)
    bus: EventBus = request.app.state.event_bus
    timeout = lifecycle.settings.compat_wait_seconds
    waiting = asyncio.gather(*(wait_for_end(bus, lifecycle, key, row.id, timeout) for row in rows))
    async with _disconnect(request) as gone:
        either: set[asyncio.Future[Any]] = {waiting, gone}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    if not waiting.done():
        waiting.cancel()
        await _cancel_left(lifecycle, key, rows)
    ended = await waiting
    pending = [row.id for row, end in zip(rows, ended, strict=True) if end is None]
    if pending:
        raise JobStillRunning(pending, timeout)
    finished: list[Finished] = []
    for end in ended:
        assert end is not None
        if end.status is not JobStatus.succeeded:
            reason = end.error_message or end.error_code or end.status.value
            raise JobDidNotSucceed(end.id, end.status.value, reason)
        view = (await run_blocking(render_jobs, request, [end]))[0]
        files = [
            (await run_blocking(lifecycle.output_file, key, end.id, output.index))[0]
            for output in view.outputs
        ]
        finished.append(Finished(view, files))
    return finished


@contextlib.asynccontextmanager
async def _disconnect(request: Request) -> AsyncIterator[asyncio.Future[None]]:
    """A future done when the client disconnects. The body was read before the route ran, so
    the server's next message is the disconnect (uvicorn's `receive` blocks until then)."""

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task = asyncio.ensure_future(watch())
    try:
        yield task
    finally:
        task.cancel()


async def _cancel_left(lifecycle: JobLifecycle, key: ApiKey, rows: list[JobRow]) -> None:
    """Cancels the jobs of a request whose client went away; raises `ClientGone`."""
    cancelled = []
    for row in rows:
        after = await run_blocking(lifecycle.cancel, key, row.id)
        if after.status is JobStatus.cancelled:
            cancelled.append(row.id)
    log.info("compat client disconnected; cancelled %s", ", ".join(cancelled) or "nothing")
    raise ClientGone(f"the client disconnected; cancelled job(s) {', '.join(cancelled) or '-'}")


def parse_size(size: str, loc: tuple[str | int, ...]) -> tuple[int, int]:
    """`WIDTHxHEIGHT` in pixels."""
    width, sep, height = size.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise InvalidField(loc, f"size must be WIDTHxHEIGHT (e.g. 512x512), got {size!r}")
    return int(width), int(height)
