"""Each repository's stable URL: a TCP forwarder on its stable loopback port that connects every
new connection to the container serving now (the port in `current.json`, read per connection).

A switch is the rename of `current.json`, so it is atomic per connection: a connection made
before it keeps talking to the old container until that one is stopped (after the switch), one
made after it reaches the new one. Run by `trainhook up` and by `trainhook worker` when it
builds containers; when the port is already held (another process of the same home forwards
it), this process leaves it to that one."""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
from collections.abc import Iterable

from trainhook.releases import LOOPBACK, Releases

log = logging.getLogger("trainhook.forward")
IDLE_TIMEOUT = 600.0  # a connection with no byte either way for this long is closed
CONNECT_TIMEOUT = 5.0
NOTHING_SERVING = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\n"
    b"Content-Length: 41\r\n\r\nno release of this repository serves yet\n"
)


class Forwarder:
    """Listens on the stable port of each repository in `releases` until `close()`."""

    def __init__(self, releases: Iterable[Releases]) -> None:
        self.releases = list(releases)
        self.listeners: list[socket.socket] = []
        self.ports: dict[str, int] = {}  # slug -> stable port this process forwards
        self._stop = threading.Event()
        self._acceptors: list[threading.Thread] = []

    def start(self) -> dict[str, int]:
        """Bind every stable port this process can; returns {slug: port} of those bound."""
        for releases in self.releases:
            port = releases.stable_port()
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((LOOPBACK, port))
            except OSError as exc:
                sock.close()
                log.warning(
                    "stable URL of %s: port %d is held (%s); another trainhook process of "
                    "this home forwards it, or something else took it",
                    releases.slug, port, exc,
                )  # fmt: skip
                continue
            sock.listen(64)
            sock.settimeout(0.5)  # so close() is noticed without another connection
            self.listeners.append(sock)
            self.ports[releases.slug] = port
            acceptor = threading.Thread(
                target=self._accept, args=(sock, releases), name=f"forward-{port}", daemon=True
            )
            acceptor.start()
            self._acceptors.append(acceptor)
        return dict(self.ports)

    def close(self) -> None:
        """Stop listening; the ports are free again when this returns. A listener closed
        while its accept thread still waits on it stays bound until that wait ends (up to
        its 0.5 s timeout): a restarted `up` binding at once found the port held."""
        self._stop.set()
        for sock in self.listeners:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a waiting accept() at once
        for acceptor in self._acceptors:
            acceptor.join(timeout=5)
        for sock in self.listeners:
            sock.close()
        self.listeners.clear()
        self._acceptors.clear()

    def _accept(self, listener: socket.socket, releases: Releases) -> None:
        while not self._stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            threading.Thread(
                target=self._serve, args=(client, releases), name="forward-conn", daemon=True
            ).start()

    def _serve(self, client: socket.socket, releases: Releases) -> None:
        with client:
            client.settimeout(None)
            current = releases.current() or {}
            port = current.get("port")
            if not isinstance(port, int):
                with contextlib.suppress(OSError):
                    client.sendall(NOTHING_SERVING)
                return
            try:
                upstream = socket.create_connection((LOOPBACK, port), timeout=CONNECT_TIMEOUT)
            except OSError as exc:
                log.warning("stable URL of %s: port %d refused: %s", releases.slug, port, exc)
                return
            with upstream:
                upstream.settimeout(None)
                pipe(client, upstream)


def pipe(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until both sides have finished sending (half-closes passed on),
    or nothing moves for IDLE_TIMEOUT."""
    with selectors.DefaultSelector() as selector:
        selector.register(a, selectors.EVENT_READ, b)
        selector.register(b, selectors.EVENT_READ, a)
        open_sides = 2
        while open_sides:
            ready = selector.select(timeout=IDLE_TIMEOUT)
            if not ready:
                return
            for key, _ in ready:
                source: socket.socket = key.fileobj  # type: ignore[assignment]
                target: socket.socket = key.data
                try:
                    data = source.recv(65536)
                    if data:
                        target.sendall(data)
                        continue
                    target.shutdown(socket.SHUT_WR)
                except OSError:
                    return  # a reset on either side ends the connection
                selector.unregister(source)
                open_sides -= 1
