"""Tiny local HTTP servers for git: a repository served over git's dumb HTTP protocol, and a
server answering every request with a redirect. Each records the paths it was asked for, so a
test can prove git never reached it."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.support.gitrepo import git


class Served:
    """A running server: its base URL and the request paths it has seen."""

    def __init__(self, server: ThreadingHTTPServer, seen: list[str]) -> None:
        self.server = server
        self.seen = seen

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@contextlib.contextmanager
def _running(handler: Any, seen: list[str]) -> Iterator[Served]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="git-http", daemon=True)
    thread.start()
    try:
        yield Served(server, seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def publish(worktree: Path, root: Path, name: str) -> Path:
    """A bare copy of `worktree` at `root/name`, ready for dumb HTTP (update-server-info)."""
    bare = root / name
    if bare.exists():
        git(bare, "fetch", "-q", str(worktree), "+refs/heads/*:refs/heads/*")
    else:
        root.mkdir(parents=True, exist_ok=True)
        git(root, "clone", "-q", "--bare", str(worktree), name)
    git(bare, "update-server-info")
    return bare


@contextlib.contextmanager
def dumb_http(root: Path) -> Iterator[Served]:
    """Serve the files under `root` as they are (git's dumb HTTP needs nothing more)."""
    seen: list[str] = []

    class Files(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            super().do_GET()

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

    with _running(partial(Files, directory=str(root)), seen) as served:
        yield served


@contextlib.contextmanager
def redirecting(target: str, code: int) -> Iterator[Served]:
    """Answer every request with `code` to `target` + what follows the repository in the path
    (`/info/refs?service=…`): a repository moved to another host, as git understands it."""
    seen: list[str] = []

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(code)
            rest = self.path.split(".git", 1)[-1]
            self.send_header("Location", target + rest)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with _running(Redirect, seen) as served:
        yield served
