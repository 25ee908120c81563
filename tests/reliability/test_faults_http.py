"""Slow and greedy clients against the real server process (`trainhook serve`, uvicorn over
real sockets): slow request heads and bodies are answered 408 and closed within a bound, an
oversized head 431, an oversized body 413 without the server reading it all; the server's
memory stays bounded and honest pushes are answered all along; nothing is stored for them."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import REPO_ROOT, SECRET
from tests.service.github_payloads import push_payload, signed
from tests.support.postgres import free_port
from trainhook.models import deliveries
from trainhook.settings import Settings

BODY_LIMIT = 1024 * 1024
HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 2.0
SLACK = 2.0  # a closed connection is noticed within the timeout plus this
API_TOKEN = "rebuild-token-0123456789"
RSS_GROWTH_MAX_KB = 40 * 1024  # what the faults below may add to the server's memory, at most


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    db_url: str

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS for the server process")

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def push(self) -> int:
        """One honest signed push, over a connection of its own; the answer's status."""
        body, headers = signed(push_payload())
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/webhooks/github", data=body, headers=headers
        )
        with urllib.request.urlopen(request, timeout=5) as answer:
            return int(answer.status)

    def stored(self) -> int:
        engine = sa.create_engine(self.db_url)
        try:
            with engine.connect() as conn:
                return int(
                    conn.execute(sa.select(sa.func.count()).select_from(deliveries)).scalar_one()
                )
        finally:
            engine.dispose()


@pytest.fixture
def server(
    tmp_path: Path, sqlite_template: Path, make_settings: Callable[..., Settings]
) -> Iterator[Server]:
    """`trainhook serve` in its own process, as it runs in production, with short limits."""
    db = tmp_path / "trainhook.db"
    shutil.copy(sqlite_template, db)
    url = f"sqlite:///{db}"
    settings = make_settings(url)  # writes the repositories file
    port = free_port()
    env = {
        **os.environ,
        "TRAINHOOK_HOME": str(settings.home),
        "TRAINHOOK_CONFIG": str(settings.config_path),
        "TRAINHOOK_DATABASE_URL": url,
        "TEST_WEBHOOK_SECRET": SECRET,
        "TRAINHOOK_BODY_LIMIT": str(BODY_LIMIT),
        "TRAINHOOK_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
        "TRAINHOOK_BODY_TIMEOUT": str(BODY_TIMEOUT),
        "TRAINHOOK_API_TOKEN": API_TOKEN,
    }
    argv = [sys.executable, "-m", "trainhook.cli", "serve", "--host", "127.0.0.1"]
    proc = subprocess.Popen(
        [*argv, "--port", str(port)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    running = Server(proc, port, url)
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"trainhook serve did not start: {proc.communicate()[1].decode()}")
            time.sleep(0.05)
    yield running
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def closed_by_server(sock: socket.socket) -> tuple[bool, bytes]:
    """(True, what the server sent last) once it closed `sock`; (False, b"") while open."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False, b""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, BlockingIOError, TimeoutError):
        pass
    return True, data


def answer_status(data: bytes) -> int:
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0


def test_slowloris_heads_are_closed_within_the_timeout_and_honest_pushes_still_answered(
    server: Server,
):
    before = server.rss_kb()
    slow = []
    for _ in range(200):
        sock = server.connect()
        sock.sendall(b"POST /webhooks/github HTTP/1.1\r\nHost: trainhook\r\nX-Slow: ")
        sock.setblocking(False)
        slow.append(sock)
    opened = time.monotonic()
    closed_at: dict[int, float] = {}
    answers: list[bytes] = []
    honest: list[int] = []
    peak = before
    while len(closed_at) < len(slow) and time.monotonic() - opened < HEADER_TIMEOUT + SLACK + 3:
        for i, sock in enumerate(slow):
            if i in closed_at:
                continue
            done, data = closed_by_server(sock)
            if done:
                closed_at[i] = time.monotonic() - opened
                answers.append(data)
                continue
            with contextlib.suppress(OSError):
                sock.send(b"a")  # one more byte of a header that never ends
        honest.append(server.push())
        peak = max(peak, server.rss_kb())
        time.sleep(0.1)
    for sock in slow:
        sock.close()

    assert len(closed_at) == len(slow), f"{len(slow) - len(closed_at)} slow heads still open"
    assert max(closed_at.values()) < HEADER_TIMEOUT + SLACK
    assert {answer_status(a) for a in answers} <= {408, 0}  # 408, or closed at once
    assert honest and set(honest) == {202}
    assert server.stored() == len(honest)
    assert peak - before < RSS_GROWTH_MAX_KB, f"server grew by {peak - before} KiB"


def test_a_body_sent_byte_by_byte_is_answered_408_and_closed(server: Server):
    body, headers = signed(push_payload())
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sock = server.connect()
    sock.sendall(
        f"POST /webhooks/github HTTP/1.1\r\nHost: trainhook\r\n{head}"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    sock.setblocking(False)
    started = time.monotonic()
    sent = 0
    done, data = False, b""
    while not done and time.monotonic() - started < BODY_TIMEOUT + SLACK + 3:
        with contextlib.suppress(OSError):
            sock.send(body[sent : sent + 1])
            sent += 1
        time.sleep(0.05)
        done, data = closed_by_server(sock)
    took = time.monotonic() - started
    sock.close()

    assert done and answer_status(data) == 408, data[:200]
    assert took < BODY_TIMEOUT + SLACK and sent < len(body)
    assert b"connection: close" in data.lower()
    assert server.stored() == 0
    assert server.push() == 202  # the server is fine


def test_an_endless_request_head_is_refused_431_without_keeping_it(server: Server):
    before = server.rss_kb()
    sock = server.connect()
    sock.sendall(b"POST /webhooks/github HTTP/1.1\r\nHost: trainhook\r\n")
    line = b"X-Padding: " + b"p" * 8000 + b"\r\n"
    sent = 0
    with contextlib.suppress(OSError):  # the server closes while we still send
        for _ in range(4096):  # 32 MiB of header lines
            sock.sendall(line)
            sent += len(line)
    sock.settimeout(5)
    data = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            data += chunk
    sock.close()

    assert answer_status(data) == 431 or (data == b"" and sent < 8 * 1024 * 1024), data[:200]
    assert sent < 32 * 1024 * 1024
    assert server.rss_kb() - before < RSS_GROWTH_MAX_KB
    assert server.stored() == 0
    assert server.push() == 202


def test_a_declared_oversized_body_is_413_before_any_of_it_is_read(server: Server):
    _, headers = signed(push_payload())
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sock = server.connect()
    sock.sendall(
        f"POST /webhooks/github HTTP/1.1\r\nHost: trainhook\r\n{head}"
        f"Content-Length: {100 * 1024 * 1024}\r\n\r\n".encode()
    )
    sock.settimeout(5)
    data = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):  # ends: the server closes after its answer
            data += chunk

    assert answer_status(data) == 413 and b"limit" in data, data[:200]
    assert b"connection: close" in data.lower()
    assert server.stored() == 0


@pytest.mark.parametrize("route", ["/webhooks/github", "/rebuild"])
def test_a_chunked_oversized_body_is_413_without_the_server_reading_it_all(
    server: Server, route: str
):
    before = server.rss_kb()
    _, headers = signed(push_payload())
    headers["Authorization"] = f"Bearer {API_TOKEN}"  # /rebuild reads bodies of callers it knows
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sock = server.connect()
    sock.sendall(
        f"POST {route} HTTP/1.1\r\nHost: trainhook\r\n{head}"
        "Transfer-Encoding: chunked\r\n\r\n".encode()
    )
    chunk = b"%x\r\n" % 65536 + b"{" * 65536 + b"\r\n"
    offered = 200 * 1024 * 1024
    sent = 0
    peak = before
    with contextlib.suppress(OSError):  # the server closes while we still send
        while sent < offered:
            if select.select([sock], [], [], 0)[0]:
                break  # the server answered: stop sending
            sock.sendall(chunk)
            sent += 65536
            if sent % (4 * 1024 * 1024) == 0:
                peak = max(peak, server.rss_kb())
    sock.settimeout(5)
    data = b""
    with contextlib.suppress(OSError):
        while part := sock.recv(65536):
            data += part
    sock.close()

    assert answer_status(data) == 413, data[:200]
    # The server stopped reading soon after the limit: what the client got to send is the
    # limit plus what the socket buffers hold, far from the 200 MiB offered.
    assert sent < 32 * 1024 * 1024, f"the server read {sent} bytes"
    assert peak - before < RSS_GROWTH_MAX_KB
    assert server.stored() == 0
    assert server.push() == 202


def test_a_live_event_stream_outlives_the_head_timeout(server: Server):
    # The deadline is for the request head only: a long answer (the status pages' live
    # updates) is never cut by it.
    sock = server.connect()
    sock.sendall(b"GET /events HTTP/1.1\r\nHost: trainhook\r\nAccept: text/event-stream\r\n\r\n")
    sock.settimeout(5)
    head = sock.recv(65536)
    # Read everything the server sends until the head deadline has long passed: a ping is
    # data (still open); the end of the stream (b"") or a reset, whenever it comes, is a close.
    deadline = time.monotonic() + HEADER_TIMEOUT + SLACK
    closed = False
    while not closed and (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            closed = sock.recv(65536) == b""
        except TimeoutError:
            break  # nothing more until the deadline: still open
        except ConnectionResetError:
            closed = True
    sock.close()

    assert answer_status(head) == 200 and b"text/event-stream" in head.lower()
    assert not closed, "the event stream was closed"
