"""The worker's handlers, one per job kind (see base.py). A new kind's worker side is one
module with a handler plus its registration line below, or a plug-in module exposing HANDLER
(named by the operator: `imagefleet worker --handlers module.path` / IMAGEFLEET_WORKER_HANDLERS,
or the `imagefleet.handlers` entry point group). Importing a plug-in runs its code: it is an
operator option, never taken from anything the orchestrator sends."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from imagefleet.worker.handlers.base import Handler
from imagefleet.worker.handlers.comfy import HANDLER as COMFY
from imagefleet.worker.handlers.img2img import IMG2IMG, INPAINT
from imagefleet.worker.handlers.preprocess import HANDLER as PREPROCESS
from imagefleet.worker.handlers.train_lora import HANDLER as TRAIN_LORA
from imagefleet.worker.handlers.txt2img import HANDLER as TXT2IMG
from imagefleet.worker.handlers.workflow import HANDLER as WORKFLOW

ENTRY_POINT_GROUP = "imagefleet.handlers"
BUILTIN: tuple[Handler, ...] = (
    TXT2IMG,
    IMG2IMG,
    INPAINT,
    PREPROCESS,
    TRAIN_LORA,
    COMFY,
    WORKFLOW,
)


class HandlerPluginError(RuntimeError):
    """A configured handler plug-in could not be imported or is not a handler."""


def load_handlers(modules: str = "") -> dict[str, Handler]:
    """Built-in handlers, entry-point plug-ins, then the comma-separated `modules`."""
    found: dict[str, Handler] = {handler.kind: handler for handler in BUILTIN}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        _adopt(found, point.load(), f"entry point {point.name}")
    for name in filter(None, (m.strip() for m in modules.split(","))):
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise HandlerPluginError(f"handler plug-in {name!r} cannot be imported: {exc}") from exc
        _adopt(found, getattr(module, "HANDLER", None), name)
    return found


def serving(handlers: dict[str, Handler], engine: Any) -> dict[str, Handler]:
    """The handlers this engine can run: the kinds the worker advertises."""
    return {kind: handler for kind, handler in handlers.items() if handler.supports(engine)}


def _adopt(found: dict[str, Handler], handler: Any, origin: str) -> None:
    if handler is None or not all(hasattr(handler, a) for a in ("kind", "supports", "run")):
        raise HandlerPluginError(f"{origin} has no HANDLER with kind, supports() and run()")
    found[handler.kind] = handler
