"""Errors the lifecycle raises; the app maps each to one HTTP status with the message intact."""

from __future__ import annotations


class InvalidField(ValueError):
    """422: a request field is outside what this server accepts (`loc` names the field)."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


class NotFound(LookupError):
    """404: no such thing, or it belongs to someone else (the two are not told apart)."""


class StaleAttempt(RuntimeError):
    """409: the attempt no longer owns its job (lease lost, job cancelled or finished)."""


class QuotaExceeded(RuntimeError):
    """429: a per-key limit was reached; `retry_after` says when trying again makes sense."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Conflict(RuntimeError):
    """409: the request contradicts the current state."""
