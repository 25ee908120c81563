"""Content ids of git-tracked training data, read from the pushed trees, not the files.

- tracked by git: the blob id from the pushed tree (no data byte read: one `git cat-file
  --batch-command` process answers every question the cache decision has of the commit);
- a Git LFS pointer: the LFS oid (sha256 of the real content) from the pointer itself;
- `gs://` data: the object's md5 (or crc32c and generation) from its metadata;
- anything else (a file the test stage produced or changed): a streaming blake3 digest,
  remembered in a stat cache keyed by (path, device, inode, mtime, ctime, size).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from worker.git import GIT_OPTIONS, GitError, scrub

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

POINTER_MAX = 1024  # a Git LFS pointer is ~130 bytes; larger blobs are never read
LFS_POINTER = b"version https://git-lfs.github.com/spec/"
_LFS_OID = re.compile(rb"^oid sha256:([0-9a-f]{64})$", re.MULTILINE)
_LFS_SIZE = re.compile(rb"^size ([0-9]+)$", re.MULTILINE)
GIT_TIMEOUT = 60.0


@dataclass(frozen=True)
class TreeEntry:
    mode: str  # 100644/100755 file, 120000 symlink, 40000 tree, 160000 submodule
    oid: str

    @property
    def is_file(self) -> bool:
        return self.mode in ("100644", "100755")


@dataclass(frozen=True)
class LfsPointer:
    oid: str  # sha256 of the real content
    size: int

    @property
    def content_id(self) -> str:
        return f"lfs:sha256:{self.oid}"


@dataclass(frozen=True)
class TreeFacts:
    """What the cache decision needs to know about one commit, read from its commit and tree
    objects only: no blob is touched, not even its header."""

    commit_time: int  # committer time: `git archive` gives every exported file this mtime
    root: dict[str, TreeEntry]  # the root tree's entries
    paths: dict[str, TreeEntry | None]  # asked path -> its entry, None when not in the tree
    attributes: dict[str, tuple[str, ...]]  # asked path -> blob ids of .gitattributes above it


def parse_lfs_pointer(data: bytes) -> LfsPointer | None:
    """The pointer in `data` (the blob of a file tracked by Git LFS), or None."""
    if not data.startswith(LFS_POINTER) or len(data) > POINTER_MAX:
        return None
    oid, size = _LFS_OID.search(data), _LFS_SIZE.search(data)
    if oid is None or size is None:
        return None
    return LfsPointer(oid.group(1).decode(), int(size.group(1)))


def parse_tree(data: bytes, oid_bytes: int) -> dict[str, TreeEntry]:
    """The entries of a raw tree object."""
    entries = {}
    at = 0
    while at < len(data):
        space = data.index(b" ", at)
        nul = data.index(b"\0", space)
        mode = data[at:space].decode()
        name = data[space + 1 : nul].decode("utf-8", "surrogateescape")
        entries[name] = TreeEntry(mode, data[nul + 1 : nul + 1 + oid_bytes].hex())
        at = nul + 1 + oid_bytes
    return entries


_ENV: dict[str, str] = {}


def batch_env() -> dict[str, str]:
    """A small environment for the batch git process, made once per process: a large one
    costs more to pass at every spawn than the whole query takes. No system config; the
    user's config stays readable (safe.directory)."""
    if not _ENV:
        keep = ("PATH", "HOME", "XDG_CONFIG_HOME", "GIT_CONFIG_GLOBAL", "TMPDIR")
        _ENV.update({k: os.environ[k] for k in keep if k in os.environ})
        _ENV.update(GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0", LC_ALL="C")
    return _ENV


class _Batch:
    """One `git cat-file --batch-command` process, spoken to interactively."""

    def __init__(self, mirror: Path) -> None:
        self.proc = subprocess.Popen(
            ["git", *GIT_OPTIONS, "cat-file", "--batch-command"],
            cwd=mirror,
            env=batch_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout

    def send(self, commands: Iterable[str]) -> None:
        self.stdin.write("".join(f"{c}\n" for c in commands).encode("utf-8", "surrogateescape"))
        self.stdin.flush()

    def header(self) -> tuple[str, str, int] | None:
        line = self.stdout.readline()
        if not line:
            raise GitError("git cat-file ended early: " + self._stderr())
        parts = line.decode().rstrip("\n").rsplit(" ", 2)
        if len(parts) != 3 or parts[2] in ("missing", "ambiguous") or not parts[2].isdigit():
            return None
        return parts[0], parts[1], int(parts[2])

    def body(self, size: int) -> bytes:
        data = self.stdout.read(size + 1)  # the content and its trailing newline
        if len(data) != size + 1:
            raise GitError("git cat-file ended early: " + self._stderr())
        return data[:-1]

    def tree(self) -> tuple[str, dict[str, TreeEntry]] | None:
        """Read the answer to a `contents` of a tree: (its id, its entries), None if missing."""
        head = self.header()
        if head is None:
            return None
        body = self.body(head[2])
        if head[1] != "tree":
            raise GitError(f"{head[0]} is a {head[1]}, not a tree")
        return head[0], parse_tree(body, len(head[0]) // 2)

    def close(self) -> None:
        if self.stdout.closed:
            return
        with contextlib.suppress(OSError):
            self.stdin.close()
        # git exits at the end of its input: its stdout ends, then a blocking wait is instant
        # (a wait with a timeout would poll in sleeps of milliseconds).
        with contextlib.suppress(OSError):
            while self.stdout.read(1 << 16):
                pass
        self.proc.wait()
        self.stdout.close()
        assert self.proc.stderr is not None
        self.proc.stderr.close()

    def _stderr(self) -> str:
        assert self.proc.stderr is not None
        with contextlib.suppress(OSError):
            self.stdin.close()
        self.proc.wait(timeout=GIT_TIMEOUT)
        return scrub(self.proc.stderr.read().decode("utf-8", "replace").strip()[-500:])


class TreeReader:
    """Answers what the cache decision asks of one commit, from ONE git process that reads
    commit and tree objects only: blob ids come from the trees, so no blob is opened and no
    data byte is read. The process starts (and is asked for the commit and its root tree) at
    construction, so the caller can look at the checkout meanwhile."""

    def __init__(self, mirror: Path, sha: str) -> None:
        self.sha = sha
        self.batch = _Batch(mirror)
        try:
            self.batch.send([f"contents {sha}", f"contents {sha}^{{tree}}"])
        except BaseException:
            self.batch.close()
            raise

    def facts(self, paths: Iterable[str]) -> TreeFacts:
        """The commit's time, its root tree and the tree entry of every path in `paths`.
        Closes the process."""
        batch = self.batch
        try:
            commit = batch.header()
            if commit is None or commit[1] != "commit":
                raise GitError(f"{self.sha} is not a commit in the mirror")
            text = batch.body(commit[2])
            found = re.search(rb"^committer .* (\d+) [+-]\d{4}$", text, re.MULTILINE)
            commit_time = int(found.group(1)) if found else 0
            root_tree = batch.tree()
            if root_tree is None:
                raise GitError(f"the tree of {self.sha} is missing from the mirror")
            trees: dict[str, dict[str, TreeEntry]] = {root_tree[0]: root_tree[1]}

            def subtree(entry: TreeEntry | None) -> dict[str, TreeEntry] | None:
                # Only ever descend into trees: a blob in the way is never read.
                if entry is None or entry.mode != "40000":
                    return None
                if entry.oid not in trees:
                    batch.send([f"contents {entry.oid}"])
                    answer = batch.tree()
                    if answer is None:
                        return None
                    trees[entry.oid] = answer[1]
                return trees[entry.oid]

            root = root_tree[1]
            entries: dict[str, TreeEntry | None] = {}
            attributes: dict[str, tuple[str, ...]] = {}
            for path in dict.fromkeys(paths):
                *folders, name = path.split("/")
                level: dict[str, TreeEntry] | None = root
                attrs: list[str] = []
                for folder in [*folders, None]:
                    assert level is not None
                    if ".gitattributes" in level:
                        attrs.append(level[".gitattributes"].oid)
                    if folder is None:
                        break
                    level = subtree(level.get(folder))
                    if level is None:
                        break
                entries[path] = level.get(name) if level is not None else None
                attributes[path] = tuple(attrs)
        finally:
            batch.close()
        return TreeFacts(commit_time, root, entries, attributes)

    def close(self) -> None:
        self.batch.close()


def tree_facts(mirror: Path, sha: str, paths: Iterable[str]) -> TreeFacts:
    """`TreeReader(mirror, sha).facts(paths)`."""
    return TreeReader(mirror, sha).facts(paths)


def exported_unchanged(info: os.stat_result, commit_time: int) -> bool:
    """True when the checkout's copy of a tracked file is still what `git archive` wrote:
    its mtime is the commit time, which archive gives every file it writes. A test command
    that rewrote the file fails this, and the file is hashed instead."""
    return info.st_mtime_ns == commit_time * 1_000_000_000


def read_pointer(path: Path, info: os.stat_result) -> LfsPointer | None:
    """The Git LFS pointer in the checkout file `path`, when it is one (only a file of at
    most POINTER_MAX bytes is opened)."""
    if info.st_size > POINTER_MAX:
        return None
    try:
        return parse_lfs_pointer(path.read_bytes())
    except OSError:
        return None


def lfs_object(mirror: Path, pointer: LfsPointer) -> Path | None:
    """The LFS object for `pointer` in the mirror's LFS store, if it was fetched there."""
    oid = pointer.oid
    path = mirror / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
    try:
        return path if path.stat().st_size == pointer.size else None
    except OSError:
        return None
