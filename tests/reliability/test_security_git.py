"""git only ever talks to the configured clone URL, over its scheme: no redirect is followed,
no other transport is used (a rewritten URL, `ext::`), no submodule is fetched, no hook runs.

Every attack here has a control that runs plain git the same way and shows it would have
worked, so a pass means trainhook's options stopped it, not that the setup was broken."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.reliability.gitserve import dumb_http, publish, redirecting
from tests.support.gitrepo import GIT_ENV, GitRepo, git
from tests.worker.conftest import context_for, new_build
from trainhook.repos import RepoConfig
from worker.checkout import Mirror, checkout_stage
from worker.git import GitError, transport
from worker.stage import StageFailed


def plain_git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> int:
    """git as a user would run it (no trainhook options): the control of each attack."""
    full = {**os.environ, **GIT_ENV, **(env or {})}
    done = subprocess.run(["git", *args], cwd=cwd, env=full, capture_output=True, check=False)
    return done.returncode


def repo_config(clone_url: str) -> RepoConfig:
    # Built directly, not from a file: the file's checks are the first line of defence, these
    # tests are about the second one (what git is allowed to do whatever the URL says).
    return RepoConfig(name="octo-org/social-score-api", clone_url=clone_url, secret_env="S")


def has(bare: Path, sha: str) -> bool:
    return plain_git(bare, "cat-file", "-e", f"{sha}^{{commit}}") == 0


@pytest.mark.parametrize("code", [301, 302])
def test_a_redirect_to_another_host_is_never_followed(tmp_path: Path, code: int):
    decoy = GitRepo(tmp_path / "decoy")
    decoy_sha = decoy.commit({"evil.py": "import os\n"})
    publish(decoy.path, tmp_path / "www", "decoy.git")
    with (
        dumb_http(tmp_path / "www") as elsewhere,
        redirecting(elsewhere.base + "/decoy.git", code) as configured,
    ):
        url = configured.base + "/octo-org/social-score-api.git"
        # Control: git's default (follow the first redirect) would have cloned the decoy.
        assert plain_git(tmp_path, "clone", "-q", "--bare", url, "control.git") == 0
        assert has(tmp_path / "control.git", decoy_sha)
        elsewhere.seen.clear()

        mirror = Mirror(tmp_path / "mirrors", repo_config(url))
        with pytest.raises(GitError, match=str(code)):
            mirror.ensure(decoy_sha)

    assert configured.seen, "git asked the configured server"
    assert elsewhere.seen == [], "and never the host it was sent to"
    assert not mirror.path.exists()


def test_a_url_rewrite_in_the_mirror_config_cannot_switch_to_file(tmp_path: Path):
    origin = GitRepo(tmp_path / "origin")
    first = origin.commit({"app.py": "v = 1\n"})
    publish(origin.path, tmp_path / "www", "r.git")
    decoy = GitRepo(tmp_path / "decoy")
    decoy_sha = decoy.commit({"evil.py": "import os\n"})
    with dumb_http(tmp_path / "www") as server:
        url = server.base + "/r.git"
        mirror = Mirror(tmp_path / "mirrors", repo_config(url))
        assert mirror.ensure(first) == "cloned"
        # The configured scheme is http; a rewrite rule pointing it at the local disk is ignored.
        git(mirror.path, "config", f"url.{decoy.url}.insteadOf", url)
        with pytest.raises(GitError, match="file"):
            mirror.ensure(decoy_sha)
        assert not has(mirror.path, decoy_sha)

        # Control: plain git applies the rewrite and fetches the decoy.
        control = "+refs/heads/*:refs/heads/decoy/*"
        assert plain_git(mirror.path, "fetch", "-q", url, control) == 0
        assert has(mirror.path, decoy_sha)


def ext_url(marker: Path) -> str:
    # `% ` is an escaped space in ext:: syntax: this runs `sh -c "touch <marker>"`.
    return f"ext::sh -c touch% {marker}"


def test_an_ext_clone_url_never_runs_its_command(tmp_path: Path):
    marker = tmp_path / "ext-ran"
    mirror = Mirror(tmp_path / "mirrors", repo_config(ext_url(marker)))
    with pytest.raises(GitError):
        mirror.ensure("a" * 40)
    assert not marker.exists()

    # Control: with the ext transport allowed, git does run the command.
    allow = ("-c", "protocol.ext.allow=always")
    plain_git(tmp_path, *allow, "clone", "-q", "--bare", ext_url(marker), "control.git")
    assert marker.exists()


def test_a_rewrite_to_ext_in_the_mirror_config_never_runs_its_command(origin, tmp_path: Path):
    first = origin.commit({"app.py": "v = 1\n"})
    mirror = Mirror(tmp_path / "mirrors", repo_config(origin.url))
    mirror.ensure(first)
    marker = tmp_path / "ext-ran"
    git(mirror.path, "config", f"url.{ext_url(marker)}.insteadOf", origin.url)

    with pytest.raises(GitError):
        mirror.ensure(origin.commit({"app.py": "v = 2\n"}))
    assert not marker.exists()


def test_submodules_are_never_fetched_nor_initialised(
    tmp_path: Path, origin, make_settings, sqlite_url, sqlite_engine
):
    sub = GitRepo(tmp_path / "sub")
    sub_sha = sub.commit({"payload.py": "print('from the submodule')\n"})
    publish(sub.path, tmp_path / "www", "sub.git")
    marker = tmp_path / "ext-ran"
    with dumb_http(tmp_path / "www") as server:
        # Two submodules: one over HTTP (a fetch would show in the server's log), one whose
        # URL is a command. Both gitlinks point at a real commit.
        gitmodules = (
            '[submodule "vendor/sub"]\n\tpath = vendor/sub\n'
            f"\turl = {server.base}/sub.git\n"
            '[submodule "vendor/cmd"]\n\tpath = vendor/cmd\n'
            f"\turl = {ext_url(marker)}\n"
        )
        origin.write({".gitmodules": gitmodules, "app.py": "v = 1\n"})
        git(origin.path, "add", ".gitmodules", "app.py")
        for path in ("vendor/sub", "vendor/cmd"):
            git(origin.path, "update-index", "--add", "--cacheinfo", f"160000,{sub_sha},{path}")
        git(origin.path, "commit", "-q", "-m", "vendor two submodules")  # not add -A: keep them
        sha = origin.head()
        assert "160000" in git(origin.path, "ls-tree", sha, "vendor/sub")
        settings = make_settings(sqlite_url, clone_url=origin.url)
        ctx = context_for(settings, sqlite_engine, new_build(sqlite_engine, sha))

        checkout_stage(ctx)

        assert server.seen == []
        assert not marker.exists()
        source = ctx.need_source()
        assert (source / "app.py").exists() and (source / ".gitmodules").exists()
        for path in ("vendor/sub", "vendor/cmd"):
            assert not (source / path).exists() or list((source / path).iterdir()) == []
        assert ctx.mirror is not None and not (ctx.mirror / "modules").exists()
        ctx.cleanup.close()

        # Control: git itself would fetch the HTTP submodule on a recursive clone.
        args = ("clone", "-q", "--recurse-submodules=vendor/sub", origin.url, "control")
        plain_git(tmp_path, *args)
        assert server.seen


def test_hooks_from_a_git_template_never_run_on_clone_or_fetch(
    tmp_path: Path, origin, monkeypatch: pytest.MonkeyPatch
):
    # A template directory (GIT_TEMPLATE_DIR, or init.templateDir in a global config) puts
    # hooks into every new repository, the mirror included.
    template = tmp_path / "template"
    (template / "hooks").mkdir(parents=True)
    marker = tmp_path / "hook-ran"
    for name in ("reference-transaction", "post-checkout", "post-merge", "pre-auto-gc"):
        hook = template / "hooks" / name
        hook.write_text(f"#!/bin/sh\necho {name} >> {marker}\n")
        hook.chmod(0o755)
    monkeypatch.setenv("GIT_TEMPLATE_DIR", str(template))
    mirror = Mirror(tmp_path / "mirrors", repo_config(origin.url))

    assert mirror.ensure(origin.commit({"a": "1"})) == "cloned"
    assert (mirror.path / "hooks" / "reference-transaction").exists()  # present, not run
    assert mirror.ensure(origin.commit({"a": "2"})) == "fetched"
    assert not marker.exists()

    # Control: plain git with the same template runs the hook on clone.
    plain_git(tmp_path, "clone", "-q", "--bare", origin.url, "control.git")
    assert marker.exists()


def test_a_commit_missing_after_a_refused_fetch_fails_with_git_s_reason(tmp_path: Path):
    # What an operator sees when the configured server redirects: the stage names the answer.
    with redirecting("http://127.0.0.1:9", 301) as configured:
        mirror = Mirror(tmp_path / "mirrors", repo_config(configured.base + "/r.git"))
        with pytest.raises((GitError, StageFailed)) as failure:
            mirror.ensure("b" * 40)
    assert "301" in str(failure.value)


@pytest.mark.parametrize(
    "url,allowed",
    [
        ("https://github.com/o/r.git", "https"),
        ("HTTP://h/o/r.git", "http"),
        ("ssh://git@h/o/r.git", "ssh"),
        ("git@github.com:o/r.git", "ssh"),
        ("git://h/o/r.git", "git"),
        ("file:///srv/git/r.git", "file"),
        ("/srv/git/r.git", "file"),
        ("ext::sh -c touch% x", ""),
        ("fd::3", ""),
        ("https::https://h/o/r.git", ""),
        ("gopher://h/r.git", ""),
    ],
)
def test_git_may_use_only_the_transport_of_the_configured_url(url: str, allowed: str):
    assert transport(url) == allowed
