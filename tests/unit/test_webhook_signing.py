"""Webhook signatures verify only the exact body, with the right secret, recently made."""

from __future__ import annotations

from imagefleet.orchestrator.webhooks import MAX_RETRY_SECONDS, retry_delay
from imagefleet.webhook_signing import sign, verify

BODY = b'{"event":"succeeded","job":{"id":"abc"}}'


def test_a_signature_verifies_with_the_same_secret_body_and_time() -> None:
    header = sign("s3cret", BODY, 1_800_000_000)
    assert header.startswith("t=1800000000,v1=")
    assert verify("s3cret", header, BODY, now=1_800_000_010)


def test_a_changed_body_another_secret_or_a_garbled_header_fails() -> None:
    header = sign("s3cret", BODY, 1_800_000_000)
    assert not verify("s3cret", header, BODY.replace(b"abc", b"abd"), now=1_800_000_000)
    assert not verify("other", header, BODY, now=1_800_000_000)
    assert not verify("s3cret", "v1=deadbeef", BODY, now=1_800_000_000)
    assert not verify("s3cret", "t=soon,v1=x", BODY, now=1_800_000_000)


def test_an_old_delivery_is_refused_as_a_replay() -> None:
    header = sign("s3cret", BODY, 1_800_000_000)
    assert not verify("s3cret", header, BODY, now=1_800_000_000 + 301)
    assert verify("s3cret", header, BODY, now=1_800_000_000 + 301, tolerance_seconds=600)


def test_retries_back_off_exponentially_up_to_an_hour() -> None:
    delays = [retry_delay(n) for n in range(1, 16)]
    assert 4.0 <= delays[0] <= 6.0 and 8.0 <= delays[1] <= 12.0
    assert all(delay <= MAX_RETRY_SECONDS * 1.2 for delay in delays)
    assert delays[-1] >= MAX_RETRY_SECONDS * 0.8
