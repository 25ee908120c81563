"""Data paths never leave the checkout: a symlink (to a file or on a directory of the path)
pointing outside is refused and the file it points at is never opened; `..` and absolute
paths in the repositories file and in the trainer's candidates are refused with a message
naming the value.

"Never opened" is proven with a Python audit hook: every open() of the worker process under
the watched paths is recorded while the build runs."""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.worker.conftest import build_view, logs, new_build, stage_map, toy_pipeline
from trainer.cli import main as trainer_main
from trainhook.errors import ConfigError
from trainhook.repos import load_repos
from trainhook.runtime import build_runtime
from worker.checkout import checkout_stage
from worker.hash.keys import hash_stage
from worker.loop import Worker
from worker.testcommand import repo_tests_stage

SECRET_LINE = "root-secret-line-7f3a9c"
DATA = "text,label\nlove it,pos\nhate it,neg\n"

_watched: list[str] = []
_opened: list[str] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    # Cheap when nothing is watched; audit hooks cannot be removed, so this one stays idle.
    if event == "open" and _watched and isinstance(args[0], str | bytes | os.PathLike):
        path = os.fsdecode(args[0])
        if any(path.startswith(w) for w in _watched):
            _opened.append(path)


sys.addaudithook(_audit)


@pytest.fixture
def opened() -> Iterator[list[str]]:
    """Paths under the watched prefixes opened by this process during the test."""
    _opened.clear()
    yield _opened
    _watched.clear()
    _opened.clear()


def watch(*paths: Path | str) -> None:
    _watched.extend(str(p) for p in paths)


def outside_secret(tmp_path: Path) -> Path:
    secret = tmp_path / "outside" / "train.csv"
    secret.parent.mkdir()
    secret.write_text(f"text,label\n{SECRET_LINE},pos\n")
    return secret


def run_build(settings: Any, engine: Any, sha: str) -> int:
    """Check out, run the repository's tests, hash: the stages that touch the data path."""
    build_id = new_build(engine, sha)
    stages = {"checkout": checkout_stage, "test": repo_tests_stage, "hash": hash_stage}
    Worker(build_runtime(settings, engine), pipeline=toy_pipeline(stages)).run(
        threading.Event(), burst=True
    )
    return build_id


def everything_shown(engine: Any, build_id: int) -> str:
    view = build_view(engine, build_id)
    return repr(view) + repr(logs(engine, build_id))


# The repository's own tests replace the data (or its directory) after checkout: the tar
# filter of the checkout cannot see this. They do it in their private copy of the checkout,
# so the export the hash and train stages read keeps the committed data. Run with
# `sandbox = false`, the weakest setting: the copy, not the sandbox, is what protects here.
SWAP_FILE = """
import os, sys
os.remove("data/train.csv")
os.symlink(sys.argv[1], "data/train.csv")
"""
SWAP_DIR = """
import os, shutil, sys
shutil.rmtree("data")
os.symlink(sys.argv[1], "data")
"""


@pytest.mark.parametrize("kind", ["etc-passwd", "absolute", "relative", "directory"])
def test_a_data_symlink_made_by_the_tests_never_reaches_the_export_and_is_never_read(
    kind: str, tmp_path: Path, origin, make_settings, sqlite_url, sqlite_engine, opened
):
    secret = outside_secret(tmp_path)
    script, target = SWAP_FILE, str(secret)
    if kind == "etc-passwd":
        target = "/etc/passwd"
        if not Path(target).exists():
            pytest.skip("no /etc/passwd here")
    elif kind == "relative":
        target = "../" * 12 + str(secret).lstrip("/")  # climbs out of any work dir
    elif kind == "directory":
        script, target = SWAP_DIR, str(secret.parent)
    sha = origin.commit({"data/train.csv": DATA, "swap.py": script})
    settings = make_settings(
        sqlite_url,
        clone_url=origin.url,
        extra=f'test_command = "python swap.py {target}"\nsandbox = false',
    )
    watch(secret.parent, "/etc/passwd")

    build_id = run_build(settings, sqlite_engine, sha)

    stages = stage_map(sqlite_engine, build_id)
    assert stages["test"]["status"] == "succeeded"  # the swap happened, in the copy
    assert "UNSANDBOXED (sandbox = false)" in stages["test"]["detail"]
    assert stages["hash"]["status"] == "succeeded", stages["hash"]["detail"]
    assert "data/train.csv git:" in stages["hash"]["detail"]  # the committed blob
    assert opened == []
    shown = everything_shown(sqlite_engine, build_id)
    assert SECRET_LINE not in shown and "root:x:0:0" not in shown


@pytest.mark.parametrize("link", ["/etc", "../../../../../../../../../etc"])
def test_a_committed_directory_symlink_on_the_data_path_fails_checkout_unread(
    link: str, origin, make_settings, sqlite_url, sqlite_engine, opened
):
    os.symlink(link, origin.path / "data")
    sha = origin.commit({"app.py": "x = 1\n"})
    settings = make_settings(sqlite_url, clone_url=origin.url, extra='data = ["data/passwd"]')
    watch("/etc/passwd")

    build_id = run_build(settings, sqlite_engine, sha)

    stages = stage_map(sqlite_engine, build_id)
    assert stages["checkout"]["status"] == "failed"
    assert "refused 'data'" in stages["checkout"]["detail"]
    assert stages["hash"]["status"] == "skipped"
    assert opened == []


def test_data_the_tests_replace_inside_the_checkout_is_not_what_is_hashed(
    tmp_path: Path, origin, make_settings, sqlite_url, sqlite_engine
):
    # The control: even a swap that stays inside the checkout stays in the tests' copy.
    swap = 'import os\nos.remove("data/train.csv")\nos.symlink("../v2.csv", "data/train.csv")\n'
    sha = origin.commit({"data/train.csv": DATA, "v2.csv": DATA + "meh,neg\n", "swap.py": swap})
    settings = make_settings(
        sqlite_url, clone_url=origin.url, extra='test_command = "python swap.py"\nsandbox = false'
    )
    build_id = run_build(settings, sqlite_engine, sha)
    stages = stage_map(sqlite_engine, build_id)
    assert stages["test"]["status"] == "succeeded"
    assert stages["hash"]["status"] == "succeeded", stages["hash"]["detail"]
    assert "data/train.csv git:" in stages["hash"]["detail"]


REPOS = """
[[repos]]
name = "octo-org/social-score-api"
clone_url = "https://github.com/octo-org/social-score-api.git"
secret_env = "S"
data = ["data/train.csv", {value}]
"""

BAD_PATHS = [
    "/etc/passwd",
    "../outside.csv",
    "data/../../outside.csv",
    "./../outside.csv",
    "data/..",
    "..\\\\outside.csv",
    "data\\\\..\\\\..\\\\x.csv",
]


@pytest.mark.parametrize("value", BAD_PATHS)
def test_repositories_file_refuses_data_paths_leaving_the_repo(tmp_path: Path, value: str):
    config = tmp_path / "trainhook.toml"
    config.write_text(REPOS.format(value=f'"{value}"'))
    with pytest.raises(ConfigError) as failure:
        load_repos(config)
    message = str(failure.value)
    shown = value.replace("\\\\", "\\")
    # The file, the repository, the key and the value: enough to fix it without guessing.
    for part in (str(config), "'octo-org/social-score-api'", "key 'data'", repr(shown)):
        assert part in message
    assert "relative path inside the repo" in message


@pytest.mark.parametrize(
    "candidate,reason",
    [
        ("/etc/passwd", "absolute data paths are not allowed"),
        ("../outside/train.csv", "may not contain '..'"),
        ("data/../../outside/train.csv", "may not contain '..'"),
        ("C:\\outside\\train.csv", "absolute data paths are not allowed"),
        ("..\\outside\\train.csv", "may not contain '..'"),
    ],
)
def test_trainer_refuses_candidates_leaving_its_root_before_reading(
    candidate: str,
    reason: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    opened: list[str],
):
    secret = outside_secret(tmp_path)
    root = tmp_path / "repo"
    root.mkdir()
    watch(secret.parent, "/etc/passwd")
    args = [str(root), "--out", str(tmp_path / "out"), "--data-candidates", candidate]

    assert trainer_main(["train", *args]) == 2  # a data error, not a crash

    err = capsys.readouterr().err
    assert reason in err and candidate in err
    assert opened == []
    assert not (tmp_path / "out").exists()


def test_trainer_refuses_a_candidate_whose_directory_is_a_symlink_outside(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], opened: list[str]
):
    secret = outside_secret(tmp_path)
    root = tmp_path / "repo"
    root.mkdir()
    os.symlink(secret.parent, root / "data")
    watch(secret.parent)
    args = [str(root), "--out", str(tmp_path / "out"), "--data-candidates", "data/train.csv"]

    assert trainer_main(["train", *args]) == 2

    assert "outside the data root" in capsys.readouterr().err
    assert opened == []


def test_the_audit_hook_sees_an_open_of_a_watched_file(tmp_path: Path, opened: list[str]):
    # Proves the `opened == []` assertions above can fail.
    secret = outside_secret(tmp_path)
    watch(secret.parent)
    assert SECRET_LINE in secret.read_text()
    assert opened == [str(secret)]


LINGER = """
import os, subprocess, sys
# Started in the background: it would rewrite the data (here: leave a marker) after the
# tests are over, while the hash and train stages read the checkout. The tests end only once
# it holds its lock, so that the lock's release is the proof that it is gone.
ready, told = os.pipe()
subprocess.Popen([sys.executable, "background.py", *sys.argv[1:], str(told)], pass_fds=(told,))
os.close(told)
assert os.read(ready, 1) == b"x"
print("tests passed")
"""

BACKGROUND = """
import fcntl, os, sys, time
lock_path, marker, told = sys.argv[1], sys.argv[2], int(sys.argv[3])
lock = open(lock_path, "w")
fcntl.flock(lock, fcntl.LOCK_EX)  # held until this process ends
lock.write(str(os.getpid()))
lock.flush()
os.write(told, b"x")
time.sleep(60)
open(marker, "w").close()
"""


def released_within(lock_path: Path, timeout: float) -> bool:
    """Whether the lock at `lock_path` is free within `timeout` s: its holder has ended."""
    deadline = time.monotonic() + timeout
    with lock_path.open() as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.02)


def test_nothing_the_tests_started_outlives_the_test_stage(
    tmp_path: Path, origin, make_settings, sqlite_url, sqlite_engine
):
    marker, lock = tmp_path / "still-running", tmp_path / "background.lock"
    sha = origin.commit({"data/train.csv": DATA, "linger.py": LINGER, "background.py": BACKGROUND})
    settings = make_settings(
        sqlite_url,
        clone_url=origin.url,
        # Unsandboxed, the weakest setting (and the lock and marker are reachable): the end
        # of the stage's process group, not the sandbox, is what protects here.
        extra=f'test_command = "python linger.py {lock} {marker}"\nsandbox = false',
    )
    build_id = run_build(settings, sqlite_engine, sha)

    assert stage_map(sqlite_engine, build_id)["test"]["status"] == "succeeded"
    assert lock.exists()  # the background process did start, and took its lock
    # It holds the lock for a minute if it lives: the lock comes free only when it is killed.
    if not released_within(lock, timeout=10):
        os.kill(int(lock.read_text()), signal.SIGKILL)
        pytest.fail("a process the tests started outlived the test stage")
    assert not marker.exists()
