"""Outbound URLs named by users reach public addresses only: IPv4 and IPv6 literals are judged
as written (no DNS), IPv6 that carries an IPv4 address is judged by that address too."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagefleet import netguard
from imagefleet.worker import sources

HINT = "set ALLOW=1 to allow it"


@pytest.mark.parametrize(
    "host",
    [
        "1.1.1.1",
        "2606:4700:4700::1111",
        "[2606:4700:4700::1111]",  # as pydantic's URL .host gives it
        "::ffff:8.8.8.8",
        "2002:0808:0808::1",  # 6to4 of 8.8.8.8
    ],
)
def test_public_ip_literals_are_accepted_without_a_lookup(host: str) -> None:
    netguard.check_public_host(host, HINT)


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "10.1.2.3",
        "::1",
        "[::1]",
        "::",
        "fc00::1",
        "fd12:3456:789a::1",  # unique local, fc00::/7
        "fe80::1",
        "[fe80::1%eth0]",  # link-local with a zone
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
        "::ffff:10.0.0.1",
        "::127.0.0.1",  # IPv4-compatible loopback
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "ff02::1",  # multicast
    ],
)
def test_private_loopback_link_local_and_embedded_private_addresses_are_refused(
    host: str,
) -> None:
    with pytest.raises(netguard.PrivateAddressError, match="non-public address") as info:
        netguard.check_public_host(host, HINT)
    assert HINT in str(info.value)


def test_a_name_that_does_not_resolve_is_refused_as_such() -> None:
    with pytest.raises(netguard.PrivateAddressError, match="cannot resolve"):
        netguard.check_public_host("no-such-host.invalid", HINT)


def test_localhost_by_name_is_refused_through_its_resolved_address() -> None:
    with pytest.raises(netguard.PrivateAddressError, match="non-public address"):
        netguard.check_public_host("localhost", HINT)


def test_worker_downloads_from_a_private_ipv6_literal_are_refused_before_connecting(
    tmp_path: Path,
) -> None:
    with pytest.raises(sources.SourceError, match="non-public address ::1"):
        sources.fetch("https://[::1]:8443/model.safetensors", tmp_path / "m", max_bytes=10)
