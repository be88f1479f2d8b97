"""Why a model could not be made available, as error types the worker maps to failure codes.

Each error says whether retrying can help (``retryable``): a dropped connection or a corrupted
download may succeed on the next attempt or on another node; a pickle file refused by this
worker's policy will be refused again here. ``code`` is the failure code the worker reports.
"""

from __future__ import annotations

from imagefleet import netguard


class SourceError(RuntimeError):
    """The model could not be fetched from its source (retryable on another node or later)."""

    retryable = True
    code = "model_unavailable"


class VerificationError(SourceError):
    """What was fetched does not hash to what the registry recorded; it was discarded."""


class PickleRefusedError(SourceError):
    """A pickle model file (which can run code when loaded) and this worker does not allow them."""

    retryable = False
    code = "model_refused"


class CacheFullError(SourceError):
    """The disk cache cannot make room: the model is larger than the budget, or every cached
    model is in use. Another worker (or this one, later) may have the room."""


def check_public_host(host: str) -> None:
    """Raises SourceError when the host resolves to a private, loopback or link-local address."""
    try:
        netguard.check_public_host(host, "set IMAGEFLEET_WORKER_ALLOW_PRIVATE_URLS=1 to allow it")
    except netguard.PrivateAddressError as exc:
        raise SourceError(str(exc)) from exc
