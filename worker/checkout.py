"""The checkout stage: a bare mirror per repository and a clean export of one commit."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from trainhook.builds import set_sha
from trainhook.repos import RepoConfig
from worker.context import BuildContext
from worker.difffilter import end_if_only_ignored
from worker.git import GIT_OPTIONS, GitError, git, git_env, redact, scrub, transport
from worker.stage import Outcome, StageFailed
from worker.workspace import Workspace

SHA_RE = re.compile(r"[0-9a-f]{7,64}")
REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")


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
        return git(*args, cwd=cwd, protocols=transport(self.repo.clone_url))

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
            self._git("clone", "--bare", "--quiet", "--", self.repo.clone_url, str(tmp / "m"))
            os.rename(tmp / "m", self.path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def export(mirror: Path, sha: str, dest: Path) -> int:
    """Extract commit `sha` of `mirror` into the empty directory `dest`; returns the number
    of entries. Paths that would land outside `dest` (absolute, `..`, symlinks pointing
    outside) make the stage fail, naming the path."""
    proc = subprocess.Popen(
        ["git", *GIT_OPTIONS, "archive", "--format=tar", sha],
        cwd=mirror,
        env=git_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None and proc.stderr is not None
    count = 0
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
            for member in archive:
                try:
                    archive.extract(member, dest, filter="data")
                except tarfile.FilterError as exc:
                    raise StageFailed(
                        f"checkout refused {member.name!r}: {exc} "
                        f"(only files inside the repository may be exported)"
                    ) from None
                count += 1
        # Read to the end: tarfile stops at the first end-of-archive block, and git, still
        # writing the record padding, would die of SIGPIPE (seen with large files).
        while proc.stdout.read(1 << 16):
            pass
    except tarfile.ReadError as exc:
        proc.kill()
        raise GitError(f"git archive produced an unreadable stream: {exc}") from None
    finally:
        proc.stdout.close()
        stderr = proc.stderr.read().decode("utf-8", "replace")
        proc.stderr.close()
        proc.wait()
    if proc.returncode != 0:
        raise GitError(f"git archive failed: {scrub(stderr.strip()[-1000:])}")
    return count


def checkout_stage(ctx: BuildContext) -> Outcome:
    """Mirror, export `ctx.build.sha` into a fresh work dir, remove unused old work dirs.
    A build by ref (a rebuild) has no sha yet: the ref is resolved on the fresh mirror and
    the commit recorded on the build."""
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
