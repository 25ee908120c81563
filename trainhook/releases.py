"""The container releases of a repository on this machine, as files under
`TRAINHOOK_HOME/containers/<slug>/`: one record per pushed version (`images/<version>.json`),
`current.json` (the release serving now) and `url.json` (the repository's stable port).

Files, not database rows: the deploy stage, `trainhook up`'s URL forwarder, `releases` /
`rollback` and the build page all run on the machine that runs the containers and read the
same directory; a switch is one atomic rename, so a crash leaves the old release current or
the new one, never a half-written record. In core because the service (the build page), the
worker (deploy) and the commands all read it."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trainhook.jsonfiles import read_json, write_json
from trainhook.ports import LOOPBACK, bindable

# Below Linux's default ephemeral range (32768-60999), so an outgoing connection made while
# nothing listens on the port does not take it between two runs of `trainhook up`.
STABLE_PORTS = range(20000, 30000)


class Releases:
    """One repository's release records (see the module docstring)."""

    def __init__(self, home: Path, slug: str) -> None:
        self.home = home
        self.slug = slug
        self.folder = home / "containers" / slug

    def record(self, version: str) -> dict[str, Any] | None:
        """The record of a pushed version, or None."""
        return read_json(self.folder / "images" / f"{version}.json") or None

    def save(self, version: str, record: dict[str, Any]) -> None:
        write_json(self.folder / "images" / f"{version}.json", record)

    def records(self) -> list[dict[str, Any]]:
        """Every pushed version, oldest first (by build, then by version)."""
        found = [read_json(p) for p in sorted((self.folder / "images").glob("*.json"))]
        return sorted(
            (r for r in found if r.get("version")),
            key=lambda r: (int(r.get("build_id") or 0), str(r["version"])),
        )

    def current(self) -> dict[str, Any] | None:
        """The release serving now (its record plus `container`, `port`, `url`), or None."""
        return read_json(self.folder / "current.json") or None

    def switch(self, release: dict[str, Any]) -> None:
        """Make `release` current in one rename: the forwarder reads `current.json` for every
        new connection, so this is the moment the stable URL moves."""
        write_json(self.folder / "current.json", release)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the repository's deploy lock: one deploy or rollback at a time switches, so a
        rollback never interleaves with a deploy between its check and its switch."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "w") as stream:
            fcntl.flock(stream, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(stream, fcntl.LOCK_UN)

    def stable_port(self) -> int:
        """The repository's stable port, chosen once and kept in `url.json`: the same for
        every version and every restart. The first free port from a place derived from the
        slug, skipping ports other repositories of this home hold; two processes choosing at
        once agree (the file is created with O_EXCL and the loser reads the winner's)."""
        path = self.folder / "url.json"
        port = read_json(path).get("port")
        if isinstance(port, int):
            return port
        taken = {
            read_json(other / "url.json").get("port")
            for other in (self.home / "containers").glob("*")
            if other.name != self.slug
        }
        start = int(hashlib.sha256(self.slug.encode()).hexdigest(), 16) % len(STABLE_PORTS)
        for step in range(len(STABLE_PORTS)):
            candidate = STABLE_PORTS[(start + step) % len(STABLE_PORTS)]
            if candidate not in taken and bindable(candidate):
                break
        else:
            raise RuntimeError(f"no free port in {STABLE_PORTS} for {self.slug}")
        self.folder.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(fd, "w") as stream:
                json.dump({"port": candidate}, stream)
        port = read_json(path).get("port")
        if not isinstance(port, int):
            raise RuntimeError(f"{path} holds no port")
        return port

    def url(self) -> str:
        """The repository's stable URL (http on loopback: what `trainhook up` forwards)."""
        return f"http://{LOOPBACK}:{self.stable_port()}"

    def known_url(self) -> str | None:
        """The stable URL when one was ever chosen, without choosing one (for readers such
        as the build page, which must not write)."""
        port = read_json(self.folder / "url.json").get("port")
        return f"http://{LOOPBACK}:{port}" if isinstance(port, int) else None


def home_label(home: Path) -> str:
    """A short id of TRAINHOOK_HOME, put on every container it starts, so two trainhook
    homes on one machine (tests, two instances) never adopt or remove each other's."""
    return hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:16]
