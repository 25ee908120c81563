"""The checkout stage: a bare mirror per repository and a clean checkout of one commit.

Everything in a repository is untrusted: objects are checked by git (`transfer.fsckObjects`)
when they arrive, and a commit is written out by git itself (`read-tree` + `checkout-index`
into a fresh directory), never through `tarfile`, whose `data` filter has known bypasses on
the Python versions this runs on (CVE-2025-4517 and its siblings, fixed in 3.11.13)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

from trainhook.builds import set_sha
from trainhook.repos import RepoConfig
from worker.context import BuildContext
from worker.difffilter import end_if_only_ignored
from worker.git import (
    GIT_OPTIONS,
    GIT_TIMEOUT,
    GitError,
    git,
    git_env,
    redact,
    scrub,
    transport,
)
from worker.stage import Outcome, StageFailed
from worker.stalegate import end_if_stale
from worker.workspace import Workspace

SHA_RE = re.compile(r"[0-9a-f]{7,64}")
# Branches, tags, and the heads of pull/merge requests as the forges keep them in the
# repository itself (GitHub, Gitea, Forgejo: refs/pull/N/head; GitLab:
# refs/merge-requests/N/head): a request's commit, a fork's included, is fetched from the
# configured clone_url like any other.
REFSPECS = (
    "+refs/heads/*:refs/heads/*",
    "+refs/tags/*:refs/tags/*",
    "+refs/pull/*/head:refs/pull/*/head",
    "+refs/merge-requests/*/head:refs/merge-requests/*/head",
)


# How `git fsck` (and a transfer checking objects) names a bad object:
# "error: object 1f2e...: duplicateEntries: contains duplicate file entries".
_FSCK_ERROR = re.compile(r"object ([0-9a-f]{40,64}): ([A-Za-z]+): ([^\n]*)")


class MalformedObject(StageFailed):
    """A clone or fetch brought an object git's checks refuse. It fails the stage: the
    object stays on the remote branch, so a retry would be refused the same way."""

    def __init__(self, url: str, stderr: str) -> None:
        found = _FSCK_ERROR.search(stderr)
        what = found.group(0) if found else stderr.strip().splitlines()[-1]
        super().__init__(
            f"malformed git object refused, fetched from {redact(url)}: {what} "
            "(the mirror is unchanged; a branch holding this object cannot be built "
            "until it is rewritten without it)"
        )
        self.object_id = found.group(1) if found else None


class Mirror:
    """The bare mirror of one repository, under `mirrors_dir/<slug>.git`. Only ever cloned
    and fetched from the configured `clone_url`, never from a URL in a payload."""

    def __init__(self, mirrors_dir: Path, repo: RepoConfig) -> None:
        self.repo = repo
        self.path = mirrors_dir / f"{repo.slug}.git"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # Two workers on one machine must not clone into, or fetch into, the mirror at once.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.parent / f"{self.path.name}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _git(self, *args: str, cwd: Path | None = None) -> str:
        # Talking to the remote: only the configured URL's own transport, so neither a
        # url.*.insteadOf rule nor a redirect can switch it to file://, ext:: or another.
        try:
            return git(*args, cwd=cwd, protocols=transport(self.repo.clone_url))
        except GitError as exc:
            if "fsck error" in exc.stderr or _FSCK_ERROR.search(exc.stderr):
                raise MalformedObject(self.repo.clone_url, exc.stderr) from None
            raise

    def has_commit(self, sha: str) -> bool:
        if not self.path.exists():
            return False
        try:
            git("cat-file", "-e", f"{sha}^{{commit}}", cwd=self.path)
        except GitError:
            return False
        return True

    def ensure(self, sha: str) -> str:
        """Make `sha` present; returns what was done: cloned, fetched or already present.
        Raises StageFailed when the commit is not in the repository, GitError on git faults."""
        with self._locked():
            if self.has_commit(sha):
                return "already present"
            if self.path.exists():
                self._fetch()
                action = "fetched"
            else:
                self._clone()
                action = "cloned"
                if not self.has_commit(sha):
                    # A clone brings branches and tags only: a pull request's head is in
                    # the refs only a fetch names.
                    self._fetch()
            if not self.has_commit(sha):
                raise StageFailed(
                    f"commit {sha} not found in {redact(self.repo.clone_url)} "
                    f"(not on any branch or tag: force-pushed away, or never pushed?)"
                )
            return action

    def resolve(self, ref: str) -> tuple[str, str]:
        """Fetch, then the commit `ref` names now: (sha, action). Raises StageFailed when the
        ref does not exist, GitError on git faults. Always fetches: a ref moves."""
        with self._locked():
            if self.path.exists():
                self._fetch()
                action = "fetched"
            else:
                self._clone()
                action = "cloned"
            try:
                out = git("rev-parse", "--verify", "--end-of-options", f"{ref}^{{commit}}",
                          cwd=self.path)  # fmt: skip
            except GitError:
                raise StageFailed(
                    f"ref {ref!r} not found in {redact(self.repo.clone_url)}"
                ) from None
            return out.strip(), action

    def _fetch(self) -> None:
        # Under the mirror lock no other git process writes this mirror: a lock file here was
        # left by a git killed mid-fetch (git never removes another process's locks), and
        # would fail every later fetch ("cannot lock ref"). Remove them first.
        for stale in [*self.path.glob("*.lock"), *(self.path / "refs").rglob("*.lock")]:
            stale.unlink(missing_ok=True)
        self._git("fetch", "--prune", "--no-tags", "--", self.repo.clone_url, *REFSPECS,
                  cwd=self.path)  # fmt: skip

    def _clone(self) -> None:
        # Clone beside the final path and rename: a crash never leaves a half-made mirror.
        # A worker killed mid-clone leaves its temp dir behind; under the mirror lock nobody
        # else is cloning here, so those are removed first (else each crash leaks a clone).
        for stale in self.path.parent.glob(f".{self.path.name}.*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        try:
            # --no-local: a configured plain path is fetched like any remote, so its objects
            # are checked too (a local clone hard-links them without looking).
            self._git("clone", "--bare", "--quiet", "--no-local", "--",
                      self.repo.clone_url, str(tmp / "m"))  # fmt: skip
            os.rename(tmp / "m", self.path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


# Tree entry modes (as `git ls-tree` prints them, canonical).
_MODE_TREE, _MODE_LINK = "040000", "120000"
_MODES = frozenset({_MODE_TREE, _MODE_LINK, "100644", "100755", "160000"})
# Linux limits: a longer name or path cannot be written, and paths near PATH_MAX are what
# fools realpath()-based checks (the tarfile bypass relies on it). Refused up front.
NAME_MAX = 255
PATH_MAX = 4096
# As many symlinks as the kernel follows in one lookup before it gives up (ELOOP).
_MAX_LINKS = 40


def _refuse(path: str, why: str) -> StageFailed:
    return StageFailed(
        f"checkout refused {path!r}: {why} (only files inside the repository may be checked out)"
    )


class TreeEntry(NamedTuple):
    """One entry of a commit's tree as `git ls-tree -r -t -l` lists it."""

    mode: str
    oid: str
    size: int  # 0 for trees and submodules
    path: str  # decoded with surrogateescape: any byte string survives the round trip


def _tree(mirror: Path, sha: str) -> list[TreeEntry]:
    """Every entry of commit `sha`'s tree, recursively, trees included."""
    listing = ("ls-tree", "-r", "-t", "-l", "-z", "--full-tree", f"{sha}^{{tree}}")
    done = subprocess.run(
        ["git", *GIT_OPTIONS, *listing],
        cwd=mirror,
        env=git_env(""),
        capture_output=True,
        timeout=GIT_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        said = scrub(done.stderr.decode("utf-8", "replace").strip())
        raise GitError(f"git ls-tree failed: {said[-1000:]}", said)
    entries = []
    for record in done.stdout.split(b"\0"):
        if record:
            head, _, name = record.partition(b"\t")
            mode, _kind, oid, size = head.decode("ascii").split()
            entries.append(TreeEntry(mode, oid, int(size) if size.isdigit() else 0,
                                     os.fsdecode(name)))  # fmt: skip
    return entries


def check_tree(entries: list[TreeEntry], dest: Path) -> None:
    """Refuse, naming the path, a tree git should never have let in: names git itself will
    not write (`..`, `.`, `.git`, empty), duplicate entries, an entry below something that is
    not a directory, unknown modes, names or paths too long for the file system.

    `transfer.fsckObjects` refuses most of these at fetch, but a mirror made before it was
    set, or filled by hand, may hold them: this check does not depend on how objects came."""
    room = PATH_MAX - len(os.fsencode(dest)) - 1
    kinds: dict[str, str] = {"": _MODE_TREE}
    for mode, oid, _size, path in entries:
        if mode not in _MODES:
            raise _refuse(path, f"unknown entry mode {mode} (object {oid})")
        if path in kinds:
            raise _refuse(path, f"duplicate entry in its tree (object {oid})")
        parent, _, name = path.rpartition("/")
        if kinds.get(parent) != _MODE_TREE:
            raise _refuse(path, "is below an entry that is not a directory")
        if name in ("", ".", "..") or name.lower() == ".git":
            raise _refuse(path, f"{name!r} is not a name git may check out")
        if len(os.fsencode(name)) > NAME_MAX or len(os.fsencode(path)) >= room:
            raise _refuse(path, "name or path too long for the file system")
        kinds[path] = mode


def link_escapes(root: Path, link: str) -> bool:
    """Whether following the symlink `link` (relative to `root`) leaves `root`: resolved the
    way the kernel does, one component at a time on what is on disk, never with realpath()
    (it stops resolving at PATH_MAX: the tarfile bypass). Anything this cannot resolve with
    certainty (a chain over 40 links, a path near PATH_MAX) counts as leaving."""
    base = len(os.fsencode(root))
    pending = list(reversed(link.split("/")))
    where: list[str] = []  # the resolved directory so far, relative to root
    follows = 0
    while pending:
        name = pending.pop()
        if name in ("", "."):
            continue
        if name == "..":
            if not where:
                return True
            where.pop()
            continue
        candidate = root.joinpath(*where, name)
        if base + len(os.fsencode(candidate.relative_to(root))) >= PATH_MAX - 1:
            return True
        try:
            mode = os.lstat(candidate).st_mode
        except (FileNotFoundError, NotADirectoryError):
            mode = 0  # dangling from here: the rest is taken literally (stricter than the kernel)
        if stat.S_ISLNK(mode):
            follows += 1
            target = os.readlink(candidate)
            if follows > _MAX_LINKS or target.startswith("/"):
                return True
            pending.extend(reversed(target.split("/")))
        else:
            where.append(name)
    return False


def _scratch_git_dir(path: Path, mirror: Path, oid_length: int) -> None:
    """A repository of our own whose objects are the mirror's (read through `alternates`,
    so nothing is ever written into the mirror). Its config is the only one git reads for
    the checkout: no filter, hook, fsmonitor or attributes file from the mirror's config or
    the worker's home can run or apply, whatever the repository's .gitattributes names."""
    (path / "objects" / "info").mkdir(parents=True)
    (path / "refs").mkdir()
    (path / "HEAD").write_text("ref: refs/heads/checkout\n")
    (path / "objects" / "info" / "alternates").write_text(f"{(mirror / 'objects').resolve()}\n")
    sha256 = oid_length == 64
    (path / "config").write_text(
        "[core]\n"
        f"\trepositoryformatversion = {1 if sha256 else 0}\n"
        "\tbare = false\n"
        "\tsymlinks = true\n"
        "\tautocrlf = false\n"
        "\tfsmonitor = false\n"
        "\thooksPath = /dev/null\n"
        "\tattributesFile = /dev/null\n"
        + ("[extensions]\n\tobjectFormat = sha256\n" if sha256 else "")
    )


def _checkout_env(git_dir: Path, dest: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINHOOK_", "GIT_"))}
    env.update(
        GIT_DIR=str(git_dir),
        GIT_WORK_TREE=str(dest),
        GIT_INDEX_FILE=str(git_dir / "index"),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL="/dev/null",  # the worker's ~/.gitconfig may define filter.lfs
        GIT_ATTR_NOSYSTEM="1",
        GIT_NO_REPLACE_OBJECTS="1",
        GIT_ALLOW_PROTOCOL="",  # a checkout never talks to anyone (no lazy fetch)
        GIT_TERMINAL_PROMPT="0",
        LC_ALL="C",
    )
    return env


def _free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _run_checkout(env: dict[str, str], *args: str, needs: int = 0) -> None:
    try:
        done = subprocess.run(
            ["git", *GIT_OPTIONS, *args],
            env=env,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=GIT_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise GitError(f"git {args[0]} timed out after {GIT_TIMEOUT:.0f}s") from None
    if done.returncode != 0:
        said = scrub(done.stderr.strip())
        if "invalid path" in said:  # git's own path check: the tree is bad, not the disk
            raise StageFailed(f"checkout refused the tree: {said[-1000:]}")
        message = f"git {args[0]} failed: {said[-1000:]}"
        free = _free_bytes(Path(env["GIT_WORK_TREE"]))
        if free < needs:  # git does not always say why a write failed; this is the usual why
            message += f" (No space left on device: {free} bytes free, the commit holds {needs})"
        raise GitError(message, said)


def export(mirror: Path, sha: str, dest: Path) -> int:
    """Check commit `sha` of `mirror` out into the empty directory `dest` with git; returns
    the number of entries (files, symlinks, directories, submodule placeholders).

    The tree is checked first (check_tree), then written by `git read-tree` and
    `git checkout-index` with a private index and config: git never writes through a
    symlink, runs no hook, filter or smudge (LFS pointers stay pointers) and fetches no
    submodule. Every committed symlink is then resolved on disk: one leading outside
    `dest` (absolute, `..`, through other links) makes the stage fail, naming the path."""
    entries = _tree(mirror, sha)
    check_tree(entries, dest)
    needs, free = sum(e.size for e in entries), _free_bytes(dest)
    if free < needs:
        # Refused before writing anything: a retry (after space is freed) starts clean.
        raise GitError(
            f"No space left on device: the checkout of {sha[:12]} holds {needs} bytes, "
            f"{free} free in {dest.parent}"
        )
    with tempfile.TemporaryDirectory(prefix="trainhook-checkout-") as scratch:
        git_dir = Path(scratch) / "git"
        _scratch_git_dir(git_dir, mirror, len(entries[0].oid) if entries else 40)
        env = _checkout_env(git_dir, dest)
        _run_checkout(env, "read-tree", "--end-of-options", sha)
        _run_checkout(env, "checkout-index", "--all", needs=needs)
    for entry in entries:
        if entry.mode == _MODE_LINK and link_escapes(dest, entry.path):
            target = os.readlink(dest / entry.path)
            raise _refuse(entry.path, f"a symlink to {target!r} leads outside")
    return len(entries)


def checkout_stage(ctx: BuildContext) -> Outcome:
    """Mirror, export `ctx.build.sha` into a fresh work dir, remove unused old work dirs.
    A build by ref (a rebuild) has no sha yet: the ref is resolved on the fresh mirror and
    the commit recorded on the build. A push that would take the branch back behind the
    deployed commit (worker/stalegate.py) or changed only filtered-out paths
    (worker/difffilter.py) ends here, nothing exported."""
    mirror = Mirror(ctx.settings.mirrors_dir, ctx.repo)
    if not ctx.build.sha and ctx.build.ref:
        resolved, action = mirror.resolve(ctx.build.ref)
        with ctx.engine.begin() as conn:
            set_sha(conn, ctx.build.id, resolved)
        ctx.build = replace(ctx.build, sha=resolved)
        action += f", {ctx.build.ref} is {resolved[:12]}"
    else:
        if not SHA_RE.fullmatch(ctx.build.sha.lower()):
            raise StageFailed(f"{ctx.build.sha!r} is not a commit id (expected 7-64 hex digits)")
        action = mirror.ensure(ctx.build.sha.lower())
    sha = ctx.build.sha.lower()

    stale = end_if_stale(ctx, mirror.path)
    if stale:
        return Outcome(detail=f"{sha[:12]}: mirror {action}; {stale}; nothing exported")
    ignored = end_if_only_ignored(ctx, mirror.path)
    if ignored:
        return Outcome(detail=f"{sha[:12]}: mirror {action}; {ignored}; nothing exported")
    workspace = Workspace(ctx.settings.work_dir / ctx.repo.slug, f"b{ctx.build.id}-{sha[:12]}")
    ctx.cleanup.callback(workspace.release)
    try:
        count = export(mirror.path, sha, workspace.path)
    except BaseException:
        # A partial export is of no use to anyone, and on a full disk it would stand in the
        # way of the retry's export (siblings are only cleaned after an export succeeds).
        shutil.rmtree(workspace.path, ignore_errors=True)
        raise
    removed = workspace.clean_siblings()
    ctx.mirror, ctx.source = mirror.path, workspace.path
    ctx.log("checkout", f"mirror {mirror.path.name}: {action}\n{count} entries exported\n")
    note = f", {removed} old work dir(s) removed" if removed else ""
    return Outcome(detail=f"{sha[:12]}: mirror {action}, {count} entries exported{note}")
