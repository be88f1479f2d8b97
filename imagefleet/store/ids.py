"""Identifiers: random tokens, and the cheap check that keeps junk ids away from the database."""

from __future__ import annotations

import secrets


def new_id() -> str:
    """A 32-character random hex id (jobs, attempts, inputs)."""
    return secrets.token_hex(16)


def plausible_id(value: str) -> bool:
    """Ids are short ASCII tokens; anything else (NUL bytes, 10 kB of text) cannot exist and is
    answered as unknown without reaching the database."""
    return 0 < len(value) <= 64 and value.isascii() and value.isalnum()
