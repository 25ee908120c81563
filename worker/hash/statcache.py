"""Content ids of files git does not vouch for (not tracked, or changed after checkout): a
streaming blake3 digest, remembered by stat signature so an unchanged file is hashed once."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import struct
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

MMAP_MIN = 1 << 20  # smaller files are read in one go; larger ones mmapped, multi-threaded


def blake3_file(path: Path, size: int | None = None) -> str:
    """blake3 of a file: memory-mapped and multi-threaded when large (as fast as b3sum)."""
    import blake3

    size = path.stat().st_size if size is None else size
    if size < MMAP_MIN:
        return blake3.blake3(path.read_bytes()).hexdigest()
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    hasher.update_mmap(str(path))
    return hasher.hexdigest()


Signature = tuple[int, int, int, int, int]  # device, inode, mtime_ns, ctime_ns, size
PathLike = str | os.PathLike[str]


def signature(info: os.stat_result) -> Signature:
    return (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_ctime_ns, info.st_size)


class StatCache:
    """Digests of files by their stat signature (device, inode, mtime, ctime, size), in a
    small SQLite file shared by every worker on the machine (WAL, short transactions).

    A digest is remembered only when the file's mtime and ctime were older than the moment
    it was hashed by more than `racy_ns`: a file changed again within the timestamp
    granularity keeps its signature ("racy" in git's terms), so it is hashed every time until
    it settles. `VERSION` is part of the schema: a new version starts an empty cache.

    Rows read or written are also kept in memory (at most `MEMO_MAX`): a row is only ever
    used when the file's signature still matches it, so the memory copy is as good as the
    file's, and a warm pass costs a stat per file."""

    VERSION = 2
    ALGORITHM = "blake3"
    _SIG = struct.Struct("<QQqqQ")
    MEMO_MAX = 200_000

    def __init__(self, path: Path, racy_ns: int = 2_000_000_000) -> None:
        self.path = path
        self.racy_ns = racy_ns
        self._local = threading.local()
        self.hashed_bytes = 0  # bytes read by this object (for tests and figures)
        self._memo: dict[str, tuple[bytes, str]] = {}
        self._memo_lock = threading.Lock()

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        try:
            if conn is None:
                conn = self._open()
                self._local.conn = conn
            yield conn
        except sqlite3.DatabaseError as exc:
            log.warning("stat cache %s unusable (%s): starting a new one", self.path, exc)
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
            self._local.conn = None
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            raise

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version != self.VERSION:
            conn.execute("BEGIN IMMEDIATE")
            if conn.execute("PRAGMA user_version").fetchone()[0] != self.VERSION:
                conn.execute("DROP TABLE IF EXISTS digests")
                conn.execute(
                    "CREATE TABLE digests (path TEXT PRIMARY KEY, sig BLOB, digest TEXT)"
                    " WITHOUT ROWID"
                )
                conn.execute(f"PRAGMA user_version={self.VERSION}")
            conn.execute("COMMIT")
        return conn

    def _known(self, paths: list[str]) -> dict[str, tuple[bytes, str]]:
        """path -> (signature, digest) for `paths`; many paths are read in one range scan
        of their common directory."""
        query = "SELECT path, sig, digest FROM digests"
        try:
            with self._db() as conn:
                if len(paths) > 64:
                    prefix = os.path.commonpath(paths).rstrip("/") + "/"
                    rows = conn.execute(
                        query + " WHERE path >= ? AND path < ?", (prefix, prefix[:-1] + "0")
                    ).fetchall()
                else:
                    rows = []
                    for at in range(0, len(paths), 500):
                        chunk = paths[at : at + 500]
                        marks = ",".join("?" * len(chunk))
                        rows += conn.execute(f"{query} WHERE path IN ({marks})", chunk).fetchall()
        except sqlite3.DatabaseError:
            return {}
        return {path: (sig, digest) for path, sig, digest in rows}

    def digest_files(self, paths: Iterable[PathLike]) -> dict[PathLike, tuple[str, bool]]:
        """`blake3:<hex>` of each file and whether it came from the cache, keyed by the
        paths as given. An unchanged, settled file costs one stat and a dict lookup."""
        given = list(paths)
        names = []
        for path in given:
            name = os.fspath(path)
            names.append(name if name.startswith("/") else os.path.abspath(name))
        memo = self._memo
        missing = [name for name in names if name not in memo]
        known = self._known(missing) if missing else {}
        if known:
            self._keep(known)
        out: dict[PathLike, tuple[str, bool]] = {}
        fresh: list[tuple[str, bytes, str]] = []
        prefix = self.ALGORITHM + ":"
        pack = self._SIG.pack
        for original, name in zip(given, names, strict=True):
            info = os.stat(name)
            row = memo.get(name) or known.get(name)
            if row is not None and row[0] == pack(
                info.st_dev, info.st_ino, info.st_mtime_ns, info.st_ctime_ns, info.st_size
            ):
                out[original] = (prefix + row[1], True)
                continue
            digest, sig, hashed_ns = self._hash(Path(name), info)
            out[original] = (prefix + digest, False)
            if max(sig[2], sig[3]) < hashed_ns - self.racy_ns:
                fresh.append((name, pack(*sig), digest))
        if fresh:
            self._remember(fresh)
            self._keep({name: (sig, digest) for name, sig, digest in fresh})
        return out

    def _keep(self, rows: dict[str, tuple[bytes, str]]) -> None:
        with self._memo_lock:
            if len(self._memo) + len(rows) > self.MEMO_MAX:
                self._memo = {}
            self._memo.update(rows)

    def digest(self, path: PathLike) -> tuple[str, bool]:
        return next(iter(self.digest_files([path]).values()))

    def _hash(self, path: Path, info: os.stat_result) -> tuple[str, Signature, int]:
        for _ in range(3):
            hashed_ns = time.time_ns()
            digest = blake3_file(path, info.st_size)
            self.hashed_bytes += info.st_size
            after = path.stat()
            if signature(after) == signature(info):
                return digest, signature(info), hashed_ns
            info = after  # changed while being hashed: again
        raise OSError(f"{path} keeps changing while it is hashed")

    def _remember(self, rows: list[tuple[str, bytes, str]]) -> None:
        with contextlib.suppress(sqlite3.DatabaseError), self._db() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT OR REPLACE INTO digests VALUES (?, ?, ?)", rows)
            conn.execute("COMMIT")
