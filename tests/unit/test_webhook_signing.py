"""Webhook signatures verify only the exact body, with the right secret, recently made; the
Standard Webhooks headers verify with the specification's reference library."""

from __future__ import annotations

import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from imagefleet.orchestrator.webhooks import MAX_RETRY_SECONDS, retry_delay
from imagefleet.webhook_signing import (
    delivery_headers,
    sign,
    standard_secret,
    verify,
    verify_standard,
    verify_webhook,
)

BODY = b'{"event":"succeeded","job":{"id":"abc"}}'
SECRET = "5f" * 32  # the shape the store makes: 32 random bytes in hex
# The example in the Standard Webhooks specification's reference tests.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_HEADERS = {
    "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
    "webhook-timestamp": "1614265330",
    "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
}
SPEC_BODY = b'{"test": 2432232314}'


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


def test_standard_headers_verify_with_the_reference_library_and_with_ours() -> None:
    now = int(time.time())
    headers = delivery_headers(SECRET, "1842", BODY, now)
    assert headers["webhook-id"] == "1842" and headers["webhook-timestamp"] == str(now)
    assert headers["webhook-signature"].startswith("v1,")
    assert standard_secret(SECRET).startswith("whsec_")
    assert Webhook(standard_secret(SECRET)).verify(BODY, headers) == {
        "event": "succeeded",
        "job": {"id": "abc"},
    }
    assert verify_standard(SECRET, headers, BODY)
    assert verify_standard(standard_secret(SECRET), headers, BODY)  # either form of the secret
    assert verify_webhook(SECRET, headers, BODY)
    # The legacy header rides along, signed with the same key and time.
    assert verify_webhook(SECRET, headers["Imagefleet-Signature"], BODY)


def test_our_verifier_accepts_the_specifications_own_example() -> None:
    assert verify_standard(SPEC_SECRET, SPEC_HEADERS, SPEC_BODY, now=1_614_265_330)
    upper = {name.upper(): value for name, value in SPEC_HEADERS.items()}
    assert verify_standard(SPEC_SECRET, upper, SPEC_BODY, now=1_614_265_330)


def test_one_matching_signature_among_several_is_enough_as_during_a_rotation() -> None:
    rotated = {
        **SPEC_HEADERS,
        "webhook-signature": "v1,bm90IGl0 v2,whatever " + SPEC_HEADERS["webhook-signature"],
    }
    assert verify_standard(SPEC_SECRET, rotated, SPEC_BODY, now=1_614_265_330)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"webhook-id": "msg_other"}, "another id"),
        ({"webhook-timestamp": "1614265331"}, "another time"),
        ({"webhook-timestamp": "soon"}, "no time"),
        ({"webhook-signature": "v1,not base64!"}, "garbled"),
        ({"webhook-signature": "v2," + SPEC_HEADERS["webhook-signature"][3:]}, "unknown version"),
        ({"webhook-id": ""}, "no id"),
    ],
)
def test_a_standard_signature_fails_for_any_other_id_time_or_signature(
    change: dict[str, str], why: str
) -> None:
    headers = {**SPEC_HEADERS, **change}
    assert not verify_standard(SPEC_SECRET, headers, SPEC_BODY, now=1_614_265_330), why


def test_a_standard_signature_fails_for_another_body_secret_or_an_old_timestamp() -> None:
    now = 1_614_265_330
    assert not verify_standard(SPEC_SECRET, SPEC_HEADERS, SPEC_BODY + b" ", now=now)
    assert not verify_standard(standard_secret("other"), SPEC_HEADERS, SPEC_BODY, now=now)
    assert not verify_standard("whsec_!!!", SPEC_HEADERS, SPEC_BODY, now=now)
    assert not verify_standard(SPEC_SECRET, SPEC_HEADERS, SPEC_BODY, now=now + 301)
    with pytest.raises(WebhookVerificationError):  # the reference library agrees: a replay
        Webhook(SPEC_SECRET).verify(SPEC_BODY, SPEC_HEADERS)


def test_retries_back_off_exponentially_up_to_an_hour() -> None:
    delays = [retry_delay(n) for n in range(1, 16)]
    assert 4.0 <= delays[0] <= 6.0 and 8.0 <= delays[1] <= 12.0
    assert all(delay <= MAX_RETRY_SECONDS * 1.2 for delay in delays)
    assert delays[-1] >= MAX_RETRY_SECONDS * 0.8
