"""Webhook signatures: how the orchestrator signs a delivery and how a receiver checks it.

Deliveries follow the Standard Webhooks specification (https://www.standardwebhooks.com/), so
a receiver can verify and deduplicate them with an existing library (`standardwebhooks`,
`svix`) in any language:

    webhook-id: <delivery id, the same on every retry of one delivery>
    webhook-timestamp: <unix seconds>
    webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>

The key is the UTF-8 bytes of the client key's webhook secret (`GET /v1/account`, or printed by
`imagefleet keys create`); libraries take it in the specification's form, `whsec_` followed by
the key in base64, which `standard_secret` gives. Signing the id and the timestamp with the body
lets a receiver refuse replays of an old delivery.

The older header, `Imagefleet-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(key,
"<t>.<body>")>`, is still sent beside them for one release, so that receivers written against
it keep working while they move to the standard headers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

SIGNATURE_HEADER = "Imagefleet-Signature"
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
STANDARD_SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE_SECONDS = 300


def standard_secret(secret: str) -> str:
    """The secret in the Standard Webhooks form (`whsec_<base64 key>`) that libraries such as
    `standardwebhooks.Webhook(...)` take."""
    return SECRET_PREFIX + base64.b64encode(secret.encode()).decode()


def delivery_headers(secret: str, message_id: str, body: bytes, timestamp: int) -> dict[str, str]:
    """Every signature header of one delivery: the standard three and the legacy one."""
    return {
        ID_HEADER: message_id,
        TIMESTAMP_HEADER: str(timestamp),
        STANDARD_SIGNATURE_HEADER: sign_standard(secret, message_id, body, timestamp),
        SIGNATURE_HEADER: sign(secret, body, timestamp),
    }


def verify_webhook(
    secret: str,
    headers: Mapping[str, str] | str,
    body: bytes,
    *,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """Verifies a delivery as received: given the request's headers, its Standard Webhooks
    signature (`verify_standard`); given one string, the legacy `Imagefleet-Signature` value
    (`verify`), for receivers not yet moved to the standard headers."""
    if isinstance(headers, str):
        return verify(secret, headers, body, tolerance_seconds=tolerance_seconds, now=now)
    return verify_standard(secret, headers, body, tolerance_seconds=tolerance_seconds, now=now)


def sign_standard(secret: str, message_id: str, body: bytes, timestamp: int) -> str:
    """The `webhook-signature` value: `v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify_standard(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """True when the Standard Webhooks headers sign `body` with this secret (given as shown by
    the API or in its `whsec_` form) within the tolerance. Header names are matched without
    regard to case; `webhook-signature` may list several space-separated signatures (as during a
    secret rotation), and one match is enough. Use the raw body exactly as received."""
    lowered = {name.lower(): value for name, value in headers.items()}
    message_id = lowered.get(ID_HEADER, "")
    signatures = lowered.get(STANDARD_SIGNATURE_HEADER, "")
    try:
        timestamp = int(lowered.get(TIMESTAMP_HEADER, ""))
    except ValueError:
        return False
    if not message_id or not _recent(timestamp, tolerance_seconds, now):
        return False
    key = _key_of_either_form(secret)
    if key is None:
        return False
    signed = f"{message_id}.{timestamp}.".encode() + body
    expected = hmac.new(key, signed, hashlib.sha256).digest()
    for candidate in signatures.split():
        version, _, encoded = candidate.partition(",")
        if version != "v1":
            continue
        try:
            given = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            continue
        if hmac.compare_digest(expected, given):
            return True
    return False


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The legacy `Imagefleet-Signature` value for this body at this time."""
    digest = hmac.new(_key(secret), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(
    secret: str,
    header: str,
    body: bytes,
    *,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """True when the legacy `header` is a valid signature of `body` made within the tolerance.

    Use the raw request body exactly as received (not re-serialized JSON).
    """
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if not _recent(timestamp, tolerance_seconds, now):
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


def _key(secret: str) -> bytes:
    return secret.encode()


def _key_of_either_form(secret: str) -> bytes | None:
    if not secret.startswith(SECRET_PREFIX):
        return _key(secret)
    try:
        return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True) or None
    except binascii.Error:
        return None


def _recent(timestamp: int, tolerance_seconds: float, now: float | None) -> bool:
    current = time.time() if now is None else now
    return abs(current - timestamp) <= tolerance_seconds
