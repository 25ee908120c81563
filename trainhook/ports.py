"""Loopback ports on this machine: whether one is free to bind, and a free one."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def bindable(port: int) -> bool:
    """Whether a listener could bind `port` on loopback now (SO_REUSEADDR, as servers set
    it, so connections still closing on it do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port the kernel reports free on loopback now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])
