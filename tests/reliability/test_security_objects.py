"""Malformed git objects and hostile trees never reach the disk outside a checkout.

Trees are crafted with `git mktree` (duplicate entries, `..` and `.git` names, the symlink
chain of CVE-2025-4517), as a repository's owner could push them. Each attack has a control:
plain git without trainhook's options accepts the object, and the `git archive | tarfile`
extraction trainhook used before writes outside its destination on this Python, so a pass
means the defence held, not that the setup was broken."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from tests.support.gitrepo import GIT_ENV, GitRepo
from tests.worker.conftest import (
    build_view,
    context_for,
    job_row,
    new_build,
    stage_map,
    toy_pipeline,
)
from trainhook.repos import RepoConfig
from trainhook.runtime import build_runtime
from worker.checkout import MalformedObject, Mirror, checkout_stage
from worker.local.release import Releases, unpack_bundle
from worker.loop import Worker
from worker.stage import StageFailed

# The Python versions whose tarfile `data` filter the CVE-shaped trees get through.
TARFILE_FILTER_BYPASSABLE = sys.version_info < (3, 11, 13) or (
    (3, 12) <= sys.version_info < (3, 12, 11)
)
STEPS = "abcdefghijklmnop"  # 16 levels, as in the published proof of concept


def run(cwd: Path, *args: str, stdin: bytes | None = None) -> str:
    """Plain git, no trainhook options (the same as an attacker's or a user's git)."""
    env = {**os.environ, **GIT_ENV}
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, input=stdin, capture_output=True, check=True
    )
    return done.stdout.decode().strip()


def blob(repo: Path, content: bytes) -> str:
    return run(repo, "hash-object", "-w", "--stdin", stdin=content)


def tree(repo: Path, entries: list[tuple[str, str, str]]) -> str:
    """A tree object holding exactly `entries` (mode, oid, name): `git mktree` keeps
    duplicates and names `git add` would never write."""
    kinds = {"040000": "tree", "160000": "commit"}
    lines = "".join(f"{m} {kinds.get(m, 'blob')} {oid}\t{name}\n" for m, oid, name in entries)
    return run(repo, "mktree", "--missing", stdin=lines.encode())


def ls_tree(repo: Path, oid: str) -> list[tuple[str, str, str]]:
    """The entries of tree `oid`: (mode, oid, name)."""
    entries = []
    for line in run(repo, "ls-tree", oid).splitlines():
        head, name = line.split("\t", 1)
        mode, _kind, entry = head.split()
        entries.append((mode, entry, name))
    return entries


def commit_tree(origin: GitRepo, root: str) -> str:
    """A commit of `root` on top of main, made the branch head (so a fetch brings it)."""
    sha = run(origin.path, "commit-tree", root, "-p", "HEAD", "-m", "crafted")
    run(origin.path, "update-ref", "refs/heads/main", sha)
    return sha


def repo_config(url: str) -> RepoConfig:
    return RepoConfig(name="octo-org/social-score-api", clone_url=url, secret_env="S")


def plain_clone_has(tmp_path: Path, url: str, sha: str) -> bool:
    """The control: git without object checks clones the crafted commit without a word."""
    run(tmp_path, "clone", "-q", "--bare", "--no-local", url, "control.git")
    done = subprocess.run(
        ["git", "cat-file", "-e", f"{sha}^{{commit}}"], cwd=tmp_path / "control.git", check=False
    )
    return done.returncode == 0


BAD_TREES = {
    "duplicate-entries": ("duplicateEntries", [("x", "100644"), ("x", "100644")]),
    "dotdot": ("hasDotdot", [("..", "100644")]),
    "dotgit": ("hasDotgit", [(".git", "100644")]),
    "dotgit-uppercase": ("hasDotgit", [(".GIT", "100644")]),
}


@pytest.mark.parametrize("case", sorted(BAD_TREES))
@pytest.mark.parametrize("how", ["clone", "fetch"])
def test_a_malformed_tree_is_refused_at_fetch_naming_the_object(
    case: str, how: str, tmp_path: Path, origin: GitRepo
):
    origin.commit({"app.py": "x = 1\n"})
    mirror = Mirror(tmp_path / "mirrors", repo_config(origin.url))
    if how == "fetch":
        assert mirror.ensure(origin.head()) == "cloned"
    problem, names = BAD_TREES[case]
    content = blob(origin.path, b"payload\n")
    bad = tree(origin.path, [(mode, content, name) for name, mode in names])
    sha = commit_tree(origin, bad)

    with pytest.raises(MalformedObject) as refused:
        mirror.ensure(sha)

    assert isinstance(refused.value, StageFailed)  # fails the stage, never retried
    assert f"object {bad}: {problem}:" in str(refused.value)
    assert refused.value.object_id == bad
    assert not mirror.has_commit(sha)
    assert plain_clone_has(tmp_path, origin.url, sha)


def test_a_build_of_a_malformed_commit_fails_checkout_once_naming_the_object(
    origin: GitRepo, make_settings, sqlite_url, sqlite_engine
):
    origin.commit({"app.py": "x = 1\n"})
    content = blob(origin.path, b"payload\n")
    bad = tree(origin.path, [("100644", content, "x"), ("100644", content, "x")])
    sha = commit_tree(origin, bad)
    settings = make_settings(sqlite_url, clone_url=origin.url)
    build_id = new_build(sqlite_engine, sha)

    Worker(
        build_runtime(settings, sqlite_engine), pipeline=toy_pipeline({"checkout": checkout_stage})
    ).run(threading.Event(), burst=True)

    assert build_view(sqlite_engine, build_id)["status"] == "failed"
    detail = stage_map(sqlite_engine, build_id)["checkout"]["detail"]
    assert f"object {bad}: duplicateEntries: contains duplicate file entries" in detail
    assert origin.url in detail
    assert job_row(sqlite_engine, build_id).attempts == 1  # a retry would be refused again


def cve_tree(origin: GitRepo, dest_len: int) -> tuple[str, str]:
    """The CVE-2025-4517 shape as git trees: 16 levels of long directory names each reached
    through a one-letter symlink, a 254-character symlink at the end of the chain (past
    PATH_MAX once resolved, so realpath() stops there) pointing back up, `escape` through it
    to the parent of the destination, and `escape/pwned` written through that. The last
    two need `a` and `escape` both as symlink and directory: duplicate tree entries.
    Returns (root tree, commit)."""
    repo = origin.path
    # As in CPython's own test: the directory chain just fits under PATH_MAX after `dest`.
    # Digits sort before the one-letter links, so archive writes each directory first.
    comp = "0" * ((4096 - dest_len) // (len(STEPS) + 1) - 1)
    link = blob(repo, comp.encode())
    level = tree(repo, [("100644", blob(repo, b""), "keep")])  # the innermost directory
    for step in reversed(STEPS):
        level = tree(repo, [("040000", level, comp), ("120000", link, step)])
    long_link = blob(repo, b"../" * len(STEPS))
    inner = tree(repo, [("120000", long_link, "l" * 254)])
    for step in reversed(STEPS[1:]):
        inner = tree(repo, [("040000", inner, step)])
    linkpath = "/".join(STEPS) + "/" + "l" * 254
    escape = blob(repo, f"{linkpath}/..".encode())
    pwned = blob(repo, b"written outside the checkout\n")
    root = tree(
        repo,
        [(mode, oid, name) for mode, oid, name in ls_tree(repo, level)]  # `comp`, `a` -> comp
        + [
            ("040000", inner, "a"),  # duplicate: `a` is also the symlink
            ("120000", escape, "escape"),
            ("040000", tree(repo, [("100644", pwned, "pwned")]), "escape"),
        ],
    )
    return root, commit_tree(origin, root)


def old_export(mirror: Path, sha: str, dest: Path) -> None:
    """What the checkout did before: `git archive` piped into tarfile's `data` filter."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", sha], cwd=mirror, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")


def test_a_cve_shaped_tree_is_refused_at_fetch(tmp_path: Path, origin: GitRepo):
    origin.commit({"app.py": "x = 1\n"})
    root, sha = cve_tree(origin, len(str(tmp_path)) + 20)
    mirror = Mirror(tmp_path / "mirrors", repo_config(origin.url))

    with pytest.raises(MalformedObject, match=f"object {root}: duplicateEntries"):
        mirror.ensure(sha)
    assert plain_clone_has(tmp_path, origin.url, sha)


def test_a_cve_shaped_tree_already_in_the_mirror_cannot_write_outside_the_checkout(
    tmp_path: Path, origin: GitRepo, make_settings, sqlite_url, sqlite_engine
):
    settings = make_settings(sqlite_url, clone_url=origin.url)
    origin.commit({"app.py": "x = 1\n"})
    slug = settings.repos[0].slug
    work = settings.work_dir / slug
    dest_len = len(str(work)) + len("/b1-0123456789ab-01234567")
    _root, sha = cve_tree(origin, dest_len)
    # A mirror filled without object checks (made before they were on, or by hand).
    settings.mirrors_dir.mkdir(parents=True)
    run(settings.mirrors_dir, "clone", "-q", "--bare", "--no-local", origin.url, f"{slug}.git")
    ctx = context_for(settings, sqlite_engine, new_build(sqlite_engine, sha))

    with pytest.raises(StageFailed, match=r"checkout refused 'a': duplicate entry"):
        checkout_stage(ctx)

    assert not (work / "pwned").exists()
    assert [p for p in work.iterdir() if p.is_dir()] == []  # nothing half-written kept
    ctx.cleanup.close()

    # Control: the old export of the same commit, into a directory of the same depth.
    control = work / "b1-0123456789ab-control0"
    control.mkdir()
    if TARFILE_FILTER_BYPASSABLE:
        old_export(settings.mirrors_dir / f"{slug}.git", sha, control)
        assert (work / "pwned").read_text() == "written outside the checkout\n"
    else:  # a fixed Python refuses it itself; the defence above does not depend on that
        with pytest.raises(tarfile.FilterError):
            old_export(settings.mirrors_dir / f"{slug}.git", sha, control)


def test_a_symlink_leading_out_only_through_another_symlink_is_refused(
    origin: GitRepo, make_settings, sqlite_url, sqlite_engine
):
    # `a/b/c/up` -> `../..` is `a` (inside); `a/b/c/out` -> `up/../../..` reads as inside
    # when normalised as text (a/b/c/up/../../.. = a) but the kernel follows `up` first:
    # a/.. is the checkout, and ../.. climbs out of it. Both are legal git trees.
    deep = origin.path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    os.symlink("../..", deep / "up")
    os.symlink("up/../../..", deep / "out")
    sha = origin.commit({"app.py": "x = 1\n"})
    assert not os.path.normpath("a/b/c/up/../../..").startswith("..")  # the text check's view
    settings = make_settings(sqlite_url, clone_url=origin.url)
    ctx = context_for(settings, sqlite_engine, new_build(sqlite_engine, sha))

    with pytest.raises(StageFailed, match=r"checkout refused 'a/b/c/out': a symlink"):
        checkout_stage(ctx)
    ctx.cleanup.close()


POINTER = (
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
    "size 12345\n"
)


def test_no_filter_runs_at_checkout_from_the_mirror_config_home_or_gitattributes(
    tmp_path: Path,
    origin: GitRepo,
    make_settings,
    sqlite_url,
    sqlite_engine,
    monkeypatch: pytest.MonkeyPatch,
):
    marker = tmp_path / "filter-ran"
    smudge = f"sh -c 'echo ran >> {marker}; echo smudged'"
    filters = "".join(
        f'[filter "{name}"]\n\tsmudge = "{smudge}"\n\trequired = true\n' for name in ("evil", "lfs")
    )
    settings = make_settings(sqlite_url, clone_url=origin.url)
    attributes = "*.txt filter=evil\n*.csv filter=lfs diff=lfs merge=lfs -text\n"
    files = {".gitattributes": attributes, "notes.txt": "plain\n", "data/train.csv": POINTER}
    first = origin.commit(files)
    second = origin.commit({"notes.txt": "plain, v2\n"})
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text(filters)  # the worker's own ~/.gitconfig (git lfs install)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    checkout_stage(context_for(settings, sqlite_engine, new_build(sqlite_engine, first)))
    mirror = Mirror(settings.mirrors_dir, settings.repos[0]).path
    with (mirror / "config").open("a") as config:
        config.write(filters)  # and in the mirror's config

    sha = second
    ctx = context_for(settings, sqlite_engine, new_build(sqlite_engine, sha))
    checkout_stage(ctx)

    source = ctx.need_source()
    assert (source / "notes.txt").read_text() == "plain, v2\n"
    assert (source / "data" / "train.csv").read_text() == POINTER  # a pointer stays a pointer
    assert not marker.exists()
    ctx.cleanup.close()

    # Control: plain git checking the same commit out runs the filters.
    control = tmp_path / "control"
    control.mkdir()
    run(control, f"--git-dir={mirror}", f"--work-tree={control}", "checkout", sha, "--", ".")
    assert marker.exists() and (control / "notes.txt").read_text() == "smudged\n"


def test_a_checkout_keeps_inside_symlinks_modes_and_counts_entries(
    origin: GitRepo, make_settings, sqlite_url, sqlite_engine
):
    (origin.path / "docs").mkdir()
    os.symlink("../app.py", origin.path / "docs" / "inside")
    origin.write({"run.sh": "#!/bin/sh\n"})
    (origin.path / "run.sh").chmod(0o755)
    sha = origin.commit({"app.py": "x = 1\n", "data/train.csv": "text,label\n"})
    settings = make_settings(sqlite_url, clone_url=origin.url)
    ctx = context_for(settings, sqlite_engine, new_build(sqlite_engine, sha))

    outcome = checkout_stage(ctx)

    source = ctx.need_source()
    assert os.readlink(source / "docs" / "inside") == "../app.py"
    assert os.access(source / "run.sh", os.X_OK) and not os.access(source / "app.py", os.X_OK)
    # docs/, docs/inside, run.sh, app.py, data/, data/train.csv: what `git archive` counted
    assert "6 entries exported" in (outcome.detail or "")
    assert not (source / ".git").exists()
    ctx.cleanup.close()


# Release bundles: the checkout's content, unpacked again at deploy.


def bundle(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def cve_bundle(path: Path, dest_len: int) -> Path:
    """The published CVE-2025-4517 proof of concept, as a bundle: writes `../pwned`."""
    comp = "d" * ((4096 - dest_len) // (len(STEPS) + 1) - 1)
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    prefix = ""
    for step in STEPS:
        members.append((member(prefix + comp, tarfile.DIRTYPE), None))
        members.append((member(prefix + step, tarfile.SYMTYPE, comp), None))
        prefix += comp + "/"
    linkpath = "/".join(STEPS) + "/" + "l" * 254
    members.append((member(linkpath, tarfile.SYMTYPE, "../" * len(STEPS)), None))
    members.append((member("escape", tarfile.SYMTYPE, linkpath + "/.."), None))
    members.append((member("escape/pwned"), b"written outside the release\n"))
    return bundle(path, members)


BAD_BUNDLES = {
    "absolute": ([(member("/tmp/x"), b"x")], "not a relative path"),
    "dotdot": ([(member("app/../../x"), b"x")], "'..' path component"),
    "hardlink": (
        [(member("app.py"), b"x"), (member("h", tarfile.LNKTYPE, "app.py"), None)],
        "only files, directories and symlinks",
    ),
    "fifo": ([(member("f", tarfile.FIFOTYPE), None)], "only files, directories and symlinks"),
    "device": ([(member("d", tarfile.CHRTYPE), None)], "only files, directories and symlinks"),
    "absolute-symlink": ([(member("l", tarfile.SYMTYPE, "/etc"), None)], "leads outside"),
    "climbing-symlink": ([(member("l", tarfile.SYMTYPE, "../.."), None)], "leads outside"),
    "through-symlink": (
        [(member("l", tarfile.SYMTYPE, "."), None), (member("l/x"), b"x")],
        "below an entry that is not a directory",
    ),
    "twice": ([(member("a"), b"1"), (member("a"), b"2")], "given twice"),
}


@pytest.mark.parametrize("case", sorted(BAD_BUNDLES))
def test_a_release_bundle_with_anything_but_files_dirs_and_inside_links_is_refused(
    case: str, tmp_path: Path
):
    members, reason = BAD_BUNDLES[case]
    releases = Releases(tmp_path / "releases", "slug")
    archive = bundle(tmp_path / "b.tar.gz", members)

    with pytest.raises(StageFailed, match=reason):
        releases.unpack(archive, "b1", "0" * 64)

    assert list(releases.folder.iterdir()) == []  # the temp dir went with it
    assert not (tmp_path / "x").exists()


def test_a_cve_shaped_release_bundle_cannot_write_outside_the_release(tmp_path: Path):
    releases = Releases(tmp_path / "releases", "slug")
    dest_len = len(str(releases.folder)) + len("/.b1.xxxxxxxx")
    archive = cve_bundle(tmp_path / "b.tar.gz", dest_len)

    with pytest.raises(StageFailed, match="release bundle refused 'a/b/c/d"):
        releases.unpack(archive, "b1", "0" * 64)
    assert not (releases.folder / "pwned").exists()
    assert list(releases.folder.iterdir()) == []

    # Control: tarfile's own `data` filter, as unpack used it before.
    control = releases.folder / ".b1.control0"
    control.mkdir()
    if TARFILE_FILTER_BYPASSABLE:
        with tarfile.open(archive) as tar:
            tar.extractall(control, filter="data")
        assert (releases.folder / "pwned").exists()
    else:
        with pytest.raises(tarfile.FilterError), tarfile.open(archive) as tar:
            tar.extractall(control, filter="data")


def test_a_good_bundle_unpacks_with_its_inside_symlinks_and_modes(tmp_path: Path):
    script = member("run.sh")
    script.mode = 0o755
    archive = bundle(
        tmp_path / "b.tar.gz",
        [
            (member("app.py"), b"print('app')\n"),
            (member("data/train.csv"), b"text,label\n"),
            (member("train.csv", tarfile.SYMTYPE, "data/train.csv"), None),
            (script, b"#!/bin/sh\n"),
        ],
    )
    dest = tmp_path / "dest"
    dest.mkdir()

    assert unpack_bundle(archive, dest) == 5  # data/ counts as an entry
    assert (dest / "train.csv").read_text() == "text,label\n"
    assert os.access(dest / "run.sh", os.X_OK) and not os.access(dest / "app.py", os.X_OK)
