"""Keeps outbound requests made on a user's behalf (model downloads, webhooks) away from
private networks: a URL that resolves to a loopback, private or link-local address is refused
unless the operator allowed it. Without this, a worker on someone's LAN or the orchestrator in
a VPC would fetch whatever internal address a user names.

IP literals (`https://203.0.113.7/`, `https://[2606:4700:4700::1111]/`) are judged as written,
without a DNS lookup. An IPv6 address that carries an IPv4 one (IPv4-mapped `::ffff:a.b.c.d`,
IPv4-compatible `::a.b.c.d`, 6to4 `2002::/16`, the NAT64 prefix `64:ff9b::/96`) must be
public on both counts, since the network may deliver it to the IPv4 address inside.
"""

from __future__ import annotations

import ipaddress
import socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class PrivateAddressError(ValueError):
    """The host resolves to a non-public address (or does not resolve)."""


def check_public_host(host: str, allow_hint: str) -> None:
    """Raises PrivateAddressError naming the address and how to allow it (`allow_hint`).

    `host` is a name or an IP literal, IPv6 with or without its URL brackets."""
    for address in resolve(host):
        if not is_public(address):
            raise PrivateAddressError(
                f"{host!r} resolves to the non-public address {address}; {allow_hint}"
            )


def resolve(host: str) -> list[IPAddress]:
    """Every address `host` stands for: itself for an IP literal, else what DNS answers."""
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return [ipaddress.ip_address(literal)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(literal, None)
    except (socket.gaierror, UnicodeError) as exc:
        raise PrivateAddressError(f"cannot resolve {host!r}: {exc}") from exc
    return [ipaddress.ip_address(info[4][0]) for info in infos]


def is_public(address: IPAddress) -> bool:
    """True for a globally reachable unicast address whose embedded IPv4 address, if any, is
    globally reachable too."""
    if not address.is_global or address.is_multicast:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_public(embedded)
    return True


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or address in _IPV4_COMPATIBLE:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None
