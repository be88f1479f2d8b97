"""Keeps outbound requests made on a user's behalf (model downloads, webhooks) away from
private networks: a URL that resolves to a loopback, private or link-local address is refused
unless the operator allowed it. Without this, a worker on someone's LAN or the orchestrator in
a VPC would fetch whatever internal address a user names."""

from __future__ import annotations

import ipaddress
import socket


class PrivateAddressError(ValueError):
    """The host resolves to a non-public address (or does not resolve)."""


def check_public_host(host: str, allow_hint: str) -> None:
    """Raises PrivateAddressError naming the address and how to allow it (`allow_hint`)."""
    try:
        infos = socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError) as exc:
        raise PrivateAddressError(f"cannot resolve {host!r}: {exc}") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise PrivateAddressError(
                f"{host!r} resolves to the non-public address {address}; {allow_hint}"
            )
