"""Free loopback ports for servers started by tests and benchmarks."""

from __future__ import annotations

import contextlib
import socket


def free_port() -> int:
    """A port nothing listens on right now. Another process may take it before the caller
    binds it, so starters retry on "address already in use" (see orchestrator.py)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports; held open together so none is handed out twice."""
    with contextlib.ExitStack() as stack:
        sockets = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(sock.getsockname()[1]) for sock in sockets]
