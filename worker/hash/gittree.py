"""Content ids of training data, and the bytes to train on, from git's object store.

- tracked by git: the blob id from the pushed tree, however the file was reached: a file
  that was touched, copied or moved keeps its bytes, so its blob, so its id. No data byte is
  read: one `git cat-file --batch-command` process answers every question the cache
  decision has of the commit (commit and tree objects, the size of the data blob from its
  object header, symlink and LFS pointer blobs of at most a few KiB);
- a Git LFS pointer: the LFS oid (sha256 of the real content) from the pointer blob
(`gs://` data is keyed by its object metadata: worker/hash/gcsobjects.py).

The export of the commit is never looked at: the test stage ran there, and whatever it did
(rewrote the data and restored its mtime, deleted it, planted another candidate) changes
neither the data chosen, nor its id, nor the bytes trained on. A file that is not in the
commit's tree is never training data, so nothing is hashed by content any more: the blake3
digest and its (path, inode, mtime, size) stat cache served only files the export held
outside git (or changed after checkout) and were removed with the mtime trust.

Training reads a copy written from the same store, each byte checked on the way:
`write_blob` for git data (the bytes must hash to the blob id named in the key),
`copy_lfs_object` for LFS data (they must hash to the oid, or the stage is refused).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from worker.git import GIT_OPTIONS, GitError, scrub

log = logging.getLogger(__name__)

POINTER_MAX = 1024  # a Git LFS pointer is ~130 bytes; larger blobs are never read
LFS_POINTER = b"version https://git-lfs.github.com/spec/"
_LFS_OID = re.compile(rb"^oid sha256:([0-9a-f]{64})$", re.MULTILINE)
_LFS_SIZE = re.compile(rb"^size ([0-9]+)$", re.MULTILINE)
GIT_TIMEOUT = 60.0
SYMLINK_MAX = 4096  # PATH_MAX: a longer symlink target is not one a checkout could follow
SYMLINK_HOPS = 40  # as Linux's MAXSYMLINKS: more is a loop
CHUNK = 1 << 20
MODE_FILE = ("100644", "100755")
MODE_TREE = "40000"
MODE_SYMLINK = "120000"


class DataPathError(ValueError):
    """A configured data path that exists in the commit but cannot be training data."""


class DataRefused(Exception):
    """Data whose bytes are not what its content id names: never trained on or stored."""


@dataclass(frozen=True)
class TreeEntry:
    mode: str  # 100644/100755 file, 120000 symlink, 40000 tree, 160000 submodule
    oid: str

    @property
    def is_file(self) -> bool:
        return self.mode in MODE_FILE


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
    objects only."""

    commit_time: int  # committer time
    root: dict[str, TreeEntry]  # the root tree's entries
    paths: dict[str, TreeEntry | None]  # asked path -> its entry, None when not in the tree
    attributes: dict[str, tuple[str, ...]]  # asked path -> blob ids of .gitattributes above it


@dataclass(frozen=True)
class FoundFile:
    """A configured data path found in the commit: its real path (symlinks in the tree
    followed), its blob, the blob's size, and the LFS pointer it holds, if any."""

    path: str
    entry: TreeEntry
    size: int
    pointer: LfsPointer | None


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
    """Answers what the cache decision asks of one commit, from ONE git process: the commit,
    its trees, and blobs only when they are small enough to be a symlink or an LFS pointer
    (a blob's size comes from its object header; a larger blob is never opened further).
    The process starts, and is asked for the commit and its root tree, at construction;
    `facts` closes it, as does `close`."""

    def __init__(self, mirror: Path, sha: str) -> None:
        self.sha = sha
        self.batch = _Batch(mirror)
        try:
            self.batch.send([f"contents {sha}", f"contents {sha}^{{tree}}"])
        except BaseException:
            self.batch.close()
            raise
        self._root: dict[str, TreeEntry] | None = None
        self._commit_time = 0
        self._trees: dict[str, dict[str, TreeEntry]] = {}

    def _start(self) -> dict[str, TreeEntry]:
        """The root tree (reading the answers asked for at construction, once)."""
        if self._root is not None:
            return self._root
        batch = self.batch
        commit = batch.header()
        if commit is None or commit[1] != "commit":
            raise GitError(f"{self.sha} is not a commit in the mirror")
        text = batch.body(commit[2])
        found = re.search(rb"^committer .* (\d+) [+-]\d{4}$", text, re.MULTILINE)
        self._commit_time = int(found.group(1)) if found else 0
        root_tree = batch.tree()
        if root_tree is None:
            raise GitError(f"the tree of {self.sha} is missing from the mirror")
        self._trees[root_tree[0]] = root_tree[1]
        self._root = root_tree[1]
        return self._root

    def _subtree(self, entry: TreeEntry | None) -> dict[str, TreeEntry] | None:
        # Only ever descend into trees: a blob in the way is never read.
        if entry is None or entry.mode != MODE_TREE:
            return None
        if entry.oid not in self._trees:
            self.batch.send([f"contents {entry.oid}"])
            answer = self.batch.tree()
            if answer is None:
                return None
            self._trees[entry.oid] = answer[1]
        return self._trees[entry.oid]

    def blob_size(self, oid: str) -> int | None:
        """The size of blob `oid` from its object header (no content read), None if absent."""
        self.batch.send([f"info {oid}"])
        head = self.batch.header()
        return head[2] if head is not None and head[1] == "blob" else None

    def small_blob(self, oid: str, limit: int) -> bytes | None:
        """The content of blob `oid` when it has at most `limit` bytes, else None."""
        size = self.blob_size(oid)
        if size is None or size > limit:
            return None
        self.batch.send([f"contents {oid}"])
        head = self.batch.header()
        if head is None:
            return None
        return self.batch.body(head[2])

    def _walk(self, path: str, follow_last: bool) -> tuple[list[str], TreeEntry | None]:
        """(real path components, entry) of `path` in the tree, symlinks followed on the way
        (and at the end when `follow_last`), as the file system would resolve them in a
        checkout; entry None when nothing is there."""
        root = self._start()
        pending = path.split("/")
        real: list[str] = []
        levels: list[dict[str, TreeEntry] | None] = [root]
        hops = 0
        while pending:
            name = pending.pop(0)
            if name in ("", "."):
                continue
            if name == "..":
                if not real:
                    raise DataPathError(f"data path {path!r} is a symlink leaving the checkout")
                real.pop()
                levels.pop()
                continue
            level = levels[-1]
            entry = level.get(name) if level is not None else None
            if entry is None:
                return [*real, name], None
            last = all(part in ("", ".") for part in pending)
            if entry.mode == MODE_SYMLINK and (follow_last or not last):
                hops += 1
                target = self.small_blob(entry.oid, SYMLINK_MAX)
                if hops > SYMLINK_HOPS or target is None:
                    raise DataPathError(f"data path {path!r} is a symlink loop")
                text = target.decode("utf-8", "surrogateescape")
                if text.startswith("/"):
                    raise DataPathError(f"data path {path!r} is a symlink leaving the checkout")
                pending = text.split("/") + pending
                continue
            real.append(name)
            if last:
                return real, entry
            levels.append(self._subtree(entry))
            if levels[-1] is None:
                return real, None  # a file (or a submodule) where a folder should be
        return real, None  # the root itself

    def find(self, path: str) -> FoundFile | None:
        """The regular file at `path` (relative to the root of the commit), or None when the
        commit has nothing there. Raises DataPathError for a symlink leaving the tree or
        dangling, a symlink loop, or something other than a regular file."""
        real, entry = self._walk(path, follow_last=False)
        if entry is None:
            return None
        if entry.mode == MODE_SYMLINK:
            real, entry = self._walk(path, follow_last=True)
            if entry is None:
                raise DataPathError(f"data path {path!r} is a dangling symlink")
        if not entry.is_file:
            raise DataPathError(f"data path {path!r} is not a regular file")
        size = self.blob_size(entry.oid)
        if size is None:
            raise GitError(f"blob {entry.oid} ({'/'.join(real)}) is missing from the mirror")
        pointer = None
        if size <= POINTER_MAX:
            data = self.small_blob(entry.oid, POINTER_MAX)
            pointer = parse_lfs_pointer(data) if data is not None else None
        return FoundFile("/".join(real), entry, size, pointer)

    def facts(self, paths: Iterable[str]) -> TreeFacts:
        """The commit's time, its root tree and the tree entry of every path in `paths`
        (real paths: no symlink is followed). Closes the process."""
        try:
            root = self._start()
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
                    level = self._subtree(level.get(folder))
                    if level is None:
                        break
                entries[path] = level.get(name) if level is not None else None
                attributes[path] = tuple(attrs)
        finally:
            self.batch.close()
        return TreeFacts(self._commit_time, root, entries, attributes)

    def close(self) -> None:
        self.batch.close()


def tree_facts(mirror: Path, sha: str, paths: Iterable[str]) -> TreeFacts:
    """`TreeReader(mirror, sha).facts(paths)`."""
    return TreeReader(mirror, sha).facts(paths)


def lfs_object(mirror: Path, pointer: LfsPointer) -> Path | None:
    """The LFS object for `pointer` in the mirror's LFS store, if it was fetched there (its
    size is checked here, its content when it is used: `copy_lfs_object`)."""
    oid = pointer.oid
    path = mirror / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
    try:
        return path if path.stat().st_size == pointer.size else None
    except OSError:
        return None


# --- the bytes to train on -------------------------------------------------------------------


def write_blob(mirror: Path, oid: str, dest: Path) -> int:
    """Write blob `oid` of `mirror` to the new file `dest` and return its size, checking on
    the way that the bytes hash to `oid` (git does not re-hash the objects it reads, and
    `transfer.fsckObjects` checked them only when they arrived). What is trained on is
    then exactly the blob the model key names, whatever happened to the export.

    Why a copy from the object store rather than the export, measured on a 1 GiB blob
    (2 cores, warm page cache; bench/cache/run.py): on a quiet machine writing it out takes
    2.3-3.0 s with or without the check (git's inflate on one core is the bottleneck, the
    hash runs on the other); with the cores busy with other work, 3.6-6.4 s against
    1.6-3.2 s for `git cat-file blob` into a file alone. Hashing the export in place takes
    0.7-1.4 s, but leaves a window between the check and the trainer's read, and an export
    is not the blob when .gitattributes convert it (eol, working-tree-encoding). The copy
    is made only when a model is trained, next to minutes of training on that much data.

    Raises DataRefused when the bytes are not the blob, GitError when git cannot read it."""
    new = hashlib.sha1 if len(oid) == 40 else hashlib.sha256
    proc = subprocess.Popen(
        ["git", *GIT_OPTIONS, "cat-file", "--batch"],
        cwd=mirror,
        env=batch_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    created = False
    try:
        proc.stdin.write(f"{oid}\n".encode())
        proc.stdin.close()
        head = proc.stdout.readline().decode("utf-8", "replace").split()
        if len(head) != 3 or head[1] != "blob" or not head[2].isdigit():
            raise GitError(f"blob {oid} is missing from the mirror ({' '.join(head[1:])})")
        size = int(head[2])
        hasher = new(b"blob %d\0" % size)
        left = size
        with dest.open("xb") as out:
            created = True
            while left:
                block = proc.stdout.read(min(CHUNK, left))
                if not block:
                    raise GitError(f"git cat-file ended early reading blob {oid}")
                hasher.update(block)
                out.write(block)
                left -= len(block)
        actual = hasher.hexdigest()
        if actual != oid:
            raise DataRefused(
                f"blob {oid} in the mirror does not hash to its id (its bytes hash to {actual}):"
                " refused, nothing is trained on it or stored; the mirror is damaged"
            )
        return size
    except BaseException:
        if created:  # never a file this call did not make
            dest.unlink(missing_ok=True)
        raise
    finally:
        with contextlib.suppress(OSError):
            while proc.stdout.read(CHUNK):
                pass
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def copy_lfs_object(source: Path, pointer: LfsPointer, dest: Path, what: str) -> int:
    """Copy the LFS object `source` to the new file `dest`, checking that its bytes hash to
    the pointer's oid (sha256) and have its size; `what` names the data for the message.
    Raises DataRefused naming the oid otherwise: such an object is never trained on or
    stored (a model keyed by that oid must come from exactly those bytes)."""
    hasher = hashlib.sha256()
    size = 0
    created = False
    try:
        with source.open("rb") as src, dest.open("xb") as out:
            created = True
            for block in iter(lambda: src.read(CHUNK), b""):
                hasher.update(block)
                out.write(block)
                size += len(block)
        actual = hasher.hexdigest()
        if actual != pointer.oid or size != pointer.size:
            raise DataRefused(
                f"the Git LFS object for {what} does not match its oid sha256:{pointer.oid}"
                f" ({pointer.size} bytes): its {size} bytes hash to sha256:{actual}; refused,"
                f" nothing is trained on it or stored (remove {source} and fetch it again)"
            )
    except BaseException:
        if created:  # never a file this call did not make
            dest.unlink(missing_ok=True)
        raise
    return size
