"""The test stage in a venv made from the commit's deps files (`test_env = "venv"`): created
once per deps key, reused while the files do not change, pruned to TRAINHOOK_VENV_KEEP.
Real git repositories and real uv, offline: the only package is a wheel made here."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.support.required import unavailable
from tests.worker.conftest import (
    build_view,
    context_for,
    logs,
    new_build,
    run_build,
    stage_map,
)
from trainhook.artifacts import open_store
from trainhook.errors import ConfigError
from trainhook.settings import load_settings
from worker import testenv
from worker.checkout import checkout_stage
from worker.hash.keys import make_hash_stage
from worker.stage import Outcome, StageFailed
from worker.testcommand import repo_tests_stage
from worker.testenv import find_uv
from worker.venvcache import MARKER, VenvCache


@pytest.fixture(autouse=True)
def uv_installed() -> None:
    if find_uv() is None:
        unavailable("UV", "uv is not installed")


CHECK = """
import sys, tinypkg
print("prefix", sys.prefix)
print("tinypkg", tinypkg.VALUE)
"""
VENV = 'test_command = "python check.py"\ntest_env = "venv"'


def make_wheel(folder: Path, version: str = "1.0", value: str = "one") -> Path:
    """A pure-Python wheel of `tinypkg` (module tinypkg.py with VALUE = value), by hand."""
    dist = f"tinypkg-{version}.dist-info"
    files = {
        "tinypkg.py": f"VALUE = {value!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: tinypkg\nVersion: {version}\n",
        f"{dist}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for name, text in files.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"tinypkg-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
        archive.writestr(f"{dist}/RECORD", "\n".join(record) + "\n")
    return wheel


@pytest.fixture(autouse=True)
def offline_uv(tmp_path, monkeypatch):
    """Nothing may touch the network; uv's cache is the test's own."""
    monkeypatch.setenv("UV_OFFLINE", "1")
    monkeypatch.setenv("UV_PYTHON_DOWNLOADS", "never")
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")


@pytest.fixture
def wheels(tmp_path) -> Path:
    return tmp_path / "wheels"


@pytest.fixture
def settings(make_settings, sqlite_url, origin, wheels):
    # The installs run in the sandbox, which sees the local wheelhouse only when told to.
    sandbox_paths = {"TRAINHOOK_SANDBOX_PATHS": str(wheels)}
    return make_settings(sqlite_url, clone_url=origin.url, extra=VENV, env=sandbox_paths)


def run_test_stage(settings, engine, sha: str, force: bool = False):
    """Checkout and test stage of a new build of `sha`: (context, outcome or StageFailed)."""
    ctx = context_for(settings, engine, new_build(engine, sha, force=force))
    checkout_stage(ctx)
    try:
        outcome: Outcome | StageFailed = repo_tests_stage(ctx)
    except StageFailed as exc:
        outcome = exc
    ctx.cleanup.close()
    return ctx, outcome


def detail(outcome) -> str:
    assert isinstance(outcome, Outcome), f"the test stage failed: {outcome}"
    return outcome.detail or ""


def bytecode(settings) -> list[Path]:
    """The installed package's compiled modules in the one venv (the sandbox mounts a venv
    read-only for the tests, so what is not compiled at install is compiled on every run)."""
    [key] = venvs(settings)
    return list((settings.venvs_dir / key).rglob("__pycache__/tinypkg.*.pyc"))


def venvs(settings) -> list[str]:
    root = settings.venvs_dir
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.exists() else []


def test_first_build_creates_the_venv_and_the_tests_run_inside_it(
    settings, sqlite_engine, origin, wheels
):
    wheel = make_wheel(wheels)
    sha = origin.commit({"requirements.txt": f"{wheel}\n", "check.py": CHECK})

    ctx, outcome = run_test_stage(settings, sqlite_engine, sha)

    [key] = venvs(settings)
    venv = settings.venvs_dir / key
    assert f"venv created for deps {key[:12]} in " in detail(outcome)
    assert "(requirements.txt with uv)" in detail(outcome)
    log = logs(sqlite_engine, ctx.build.id)["test"]
    assert f"prefix {venv}\n" in log and "tinypkg one" in log
    assert "uv pip install" in log and (venv / MARKER).is_file()
    assert bytecode(settings), "the requirements were installed without their bytecode"


def test_second_push_with_the_same_requirements_reuses_the_venv(
    settings, sqlite_engine, origin, wheels
):
    wheel = make_wheel(wheels)
    origin.commit({"requirements.txt": f"{wheel}\n", "check.py": CHECK})
    run_test_stage(settings, sqlite_engine, origin.head())
    [key] = venvs(settings)
    marker = settings.venvs_dir / key / MARKER
    inode = marker.stat().st_ino

    sha = origin.commit({"check.py": CHECK + "print('code changed')\n"})
    ctx, outcome = run_test_stage(settings, sqlite_engine, sha)

    assert detail(outcome).endswith(f"· venv reused (deps {key[:12]})")
    assert "code changed" in detail(outcome)
    assert venvs(settings) == [key] and marker.stat().st_ino == inode
    log = logs(sqlite_engine, ctx.build.id)["test"]
    assert "uv pip install" not in log and "uv venv" not in log
    assert f"prefix {settings.venvs_dir / key}\n" in log


def test_changed_requirements_make_a_new_venv_with_the_new_package(
    settings, sqlite_engine, origin, wheels
):
    origin.commit({"requirements.txt": f"{make_wheel(wheels)}\n", "check.py": CHECK})
    run_test_stage(settings, sqlite_engine, origin.head())
    [first] = venvs(settings)

    newer = make_wheel(wheels / "v2", version="2.0", value="two")
    ctx, outcome = run_test_stage(
        settings, sqlite_engine, origin.commit({"requirements.txt": f"{newer}\n"})
    )

    assert "venv created for deps" in detail(outcome)
    assert len(venvs(settings)) == 2 and first in venvs(settings)
    assert "tinypkg two" in logs(sqlite_engine, ctx.build.id)["test"]


def test_the_venv_key_is_the_deps_key_the_hash_stage_records(
    settings, sqlite_engine, origin, wheels
):
    wheel = make_wheel(wheels)
    sha = origin.commit(
        {
            "requirements.txt": f"{wheel}\n",
            "requirements-dev.txt": "-r requirements.txt\n",
            "pyproject.toml": '[project]\nname = "x"\nversion = "0"\n',
            "check.py": CHECK,
        }
    )
    ctx = context_for(settings, sqlite_engine, new_build(sqlite_engine, sha))
    checkout_stage(ctx)

    tested = repo_tests_stage(ctx)
    make_hash_stage(open_store(settings.artifacts))(ctx)

    assert ctx.keys is not None and venvs(settings) == [ctx.keys.deps]
    assert f"deps {ctx.keys.deps[:12]}" in detail(tested)
    assert "(requirements-dev.txt, requirements.txt with uv)" in detail(tested)
    ctx.cleanup.close()


def test_a_failed_install_fails_the_build_leaves_no_venv_and_the_next_build_retries(
    settings, sqlite_engine, origin, wheels
):
    missing = wheels / "tinypkg-1.0-py3-none-any.whl"
    sha = origin.commit({"requirements.txt": f"{missing}\n", "check.py": CHECK})

    failed = run_build(settings, sqlite_engine, sha)

    test = stage_map(sqlite_engine, failed)["test"]
    assert test["status"] == "failed"
    assert test["detail"].startswith(
        "installing requirements.txt with uv into the test venv failed: uv pip install exited"
    )
    assert "tinypkg-1.0-py3-none-any.whl" in test["detail"]  # uv's own words, in the detail
    assert stage_map(sqlite_engine, failed)["hash"]["status"] == "skipped"
    assert venvs(settings) == []  # nothing half-made is left to be reused

    make_wheel(wheels)  # the file the requirements name now exists: same commit, same key
    again = run_build(settings, sqlite_engine, sha)

    assert build_view(sqlite_engine, again)["status"] == "succeeded"
    assert "venv created for deps" in stage_map(sqlite_engine, again)["test"]["detail"]


def test_two_builds_wanting_one_key_at_once_create_the_venv_once(
    settings, sqlite_engine, origin, wheels
):
    sha = origin.commit({"requirements.txt": f"{make_wheel(wheels)}\n", "check.py": CHECK})
    contexts = [context_for(settings, sqlite_engine, new_build(sqlite_engine, sha)) for _ in "ab"]
    for ctx in contexts:
        checkout_stage(ctx)
    start = threading.Barrier(len(contexts))
    details: list[str] = []

    def run(ctx) -> None:
        start.wait()
        details.append(detail(repo_tests_stage(ctx)))

    threads = [threading.Thread(target=run, args=(ctx,)) for ctx in contexts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert len(details) == 2
    assert sum("venv created" in d for d in details) == 1
    assert sum("venv reused" in d for d in details) == 1
    assert len(venvs(settings)) == 1
    for ctx in contexts:
        ctx.cleanup.close()


def test_a_venv_left_without_its_marker_is_removed_and_rebuilt(
    settings, sqlite_engine, origin, wheels
):
    sha = origin.commit({"requirements.txt": f"{make_wheel(wheels)}\n", "check.py": CHECK})
    run_test_stage(settings, sqlite_engine, sha)
    [key] = venvs(settings)
    venv = settings.venvs_dir / key
    (venv / MARKER).unlink()  # as if the worker had been killed mid-install
    (venv / "half-written").write_text("junk")

    _, outcome = run_test_stage(settings, sqlite_engine, sha)

    assert "venv created for deps" in detail(outcome)
    assert (venv / MARKER).is_file() and not (venv / "half-written").exists()


def test_a_forced_build_recreates_the_venv(settings, sqlite_engine, origin, wheels):
    sha = origin.commit({"requirements.txt": f"{make_wheel(wheels)}\n", "check.py": CHECK})
    run_test_stage(settings, sqlite_engine, sha)
    [key] = venvs(settings)
    # Something a test left in the venv: a recreated venv no longer has it. (Not the marker's
    # inode: a freed inode number is often given to the next new file.)
    leftover = settings.venvs_dir / key / "left-by-a-test"
    leftover.touch()

    _, outcome = run_test_stage(settings, sqlite_engine, sha, force=True)

    assert "venv created for deps" in detail(outcome)
    assert (settings.venvs_dir / key / MARKER).exists() and not leftover.exists()


def test_the_installers_cache_is_under_trainhook_home_unless_set(
    settings, sqlite_engine, origin, wheels, monkeypatch
):
    monkeypatch.delenv("UV_CACHE_DIR")
    sha = origin.commit({"requirements.txt": f"{make_wheel(wheels)}\n", "check.py": CHECK})

    run_test_stage(settings, sqlite_engine, sha)

    assert any((settings.home / "cache" / "uv").iterdir())


def test_a_uv_lock_is_synced_frozen_and_wins_over_requirements(
    settings, sqlite_engine, origin, wheels
):
    make_wheel(wheels)
    origin.write(
        {
            "pyproject.toml": (
                '[project]\nname = "demo"\nversion = "0"\nrequires-python = ">=3.11"\n'
                'dependencies = ["tinypkg"]\n\n'
                f'[tool.uv]\nfind-links = ["{wheels}"]\nno-index = true\n'
            ),
            "requirements.txt": f"{make_wheel(wheels / 'v2', version='2.0', value='two')}\n",
            "check.py": CHECK,
        }
    )
    subprocess.run([find_uv() or "uv", "lock"], cwd=origin.path, check=True, capture_output=True)

    ctx, outcome = run_test_stage(settings, sqlite_engine, origin.commit())

    assert "(uv.lock, pyproject.toml with uv)" in detail(outcome)
    log = logs(sqlite_engine, ctx.build.id)["test"]
    assert "uv sync --frozen --no-install-workspace" in log and "tinypkg one" in log
    assert bytecode(settings), "the locked dependencies were installed without their bytecode"


def test_pyproject_alone_installs_its_dependencies(settings, sqlite_engine, origin, wheels):
    wheel = make_wheel(wheels)
    pyproject = (
        f'[project]\nname = "demo"\nversion = "0"\ndependencies = ["tinypkg @ {wheel.as_uri()}"]\n'
    )
    sha = origin.commit({"pyproject.toml": pyproject, "check.py": CHECK})

    ctx, outcome = run_test_stage(settings, sqlite_engine, sha)

    assert "(pyproject.toml with uv)" in detail(outcome)
    assert "tinypkg one" in logs(sqlite_engine, ctx.build.id)["test"]
    assert bytecode(settings), "the dependencies were installed without their bytecode"


@pytest.mark.slow  # ensurepip alone takes seconds
def test_without_uv_the_venv_is_made_by_python_and_filled_by_pip(
    settings, sqlite_engine, origin, wheels, monkeypatch
):
    monkeypatch.setattr(testenv, "find_uv", lambda: None)
    sha = origin.commit({"requirements.txt": f"{make_wheel(wheels)}\n", "check.py": CHECK})

    ctx, outcome = run_test_stage(settings, sqlite_engine, sha)

    assert "(requirements.txt with pip)" in detail(outcome)
    log = logs(sqlite_engine, ctx.build.id)["test"]
    assert " -m venv " in log and " -m pip install " in log and "tinypkg one" in log


RACER = """
import sys, time
from pathlib import Path
from worker.venvcache import VenvCache

root, key, count = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
while not (root.parent / "go").exists():
    time.sleep(0.005)

def create(path):
    with count.open("a") as out:
        out.write("created\\n")
    time.sleep(0.3)  # a slow install: the other process must wait, not build too
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "python").symlink_to(sys.executable)

with VenvCache(root).use(key, create) as lease:
    print("created" if lease.created else "reused")
"""


def test_two_processes_wanting_one_key_at_once_create_the_venv_once(tmp_path):
    count = tmp_path / "count"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(tmp_path / "venvs"), "k" * 64, str(count)],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    (tmp_path / "go").touch()

    said = sorted(racer.communicate(timeout=30)[0].strip() for racer in racers)

    assert said == ["created", "reused", "reused"]
    assert count.read_text() == "created\n"


def fake_venv(path: Path) -> None:
    """Enough of a venv for the cache (bin/python resolves), made in microseconds."""
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "python").symlink_to(sys.executable)


def test_prune_keeps_the_most_recently_used_venvs_and_never_one_in_use(tmp_path):
    cache = VenvCache(tmp_path / "venvs", keep=2)
    (tmp_path / "venvs" / "died-mid-build" / "bin").mkdir(parents=True)  # no marker, no lock

    with cache.use("oldest", fake_venv):
        for key in ("b", "c", "d"):
            with cache.use(key, fake_venv):
                pass
        assert sorted(os.listdir(cache.root)) == [
            "c",
            "c.lock",
            "d",
            "d.lock",
            "oldest",
            "oldest.lock",
        ]
    with cache.use("c", fake_venv) as lease:  # used again: now the most recent
        assert not lease.created
    with cache.use("e", fake_venv):
        pass

    assert sorted(p.name for p in cache.root.iterdir() if p.is_dir()) == ["c", "e"]


def test_venv_keep_is_read_from_trainhook_venv_keep(settings, sqlite_engine, origin, wheels):
    assert settings.venv_keep == 5
    env = {
        "TRAINHOOK_HOME": str(settings.home),
        "TRAINHOOK_CONFIG": str(settings.config_path),
        "TRAINHOOK_SANDBOX_PATHS": str(wheels),
    }
    kept_one = load_settings({**env, "TRAINHOOK_VENV_KEEP": "1", "TEST_WEBHOOK_SECRET": "s"})
    origin.commit({"requirements.txt": f"{make_wheel(wheels)}\n", "check.py": CHECK})
    run_test_stage(kept_one, sqlite_engine, origin.head())
    newer = make_wheel(wheels / "v2", version="2.0", value="two")
    run_test_stage(kept_one, sqlite_engine, origin.commit({"requirements.txt": f"{newer}\n"}))

    assert len(venvs(kept_one)) == 1
    for bad in ("0", "two"):
        with pytest.raises(ConfigError, match=f"TRAINHOOK_VENV_KEEP={bad!r}|VENV_KEEP={bad}"):
            load_settings({**env, "TRAINHOOK_VENV_KEEP": bad})


def test_test_env_worker_runs_the_tests_in_the_workers_python(
    make_settings, sqlite_url, sqlite_engine, origin
):
    settings = make_settings(
        sqlite_url, clone_url=origin.url, extra='test_command = "python check.py"'
    )
    sha = origin.commit(
        {"requirements.txt": "tinypkg\n", "check.py": "import sys\nprint(sys.prefix)"}
    )

    _, outcome = run_test_stage(settings, sqlite_engine, sha)

    assert detail(outcome).endswith(f": {sys.prefix}")
    assert "venv created" not in detail(outcome) and not settings.venvs_dir.exists()


def test_a_bad_test_env_is_an_error_naming_the_file_the_repository_and_the_key(
    make_settings, sqlite_url
):
    with pytest.raises(ConfigError) as caught:
        make_settings(sqlite_url, extra='test_env = "conda"')

    message = str(caught.value)
    assert "trainhook.toml: repository 'octo-org/social-score-api'" in message
    assert "key 'test_env': 'conda' not in ('worker', 'venv')" in message
