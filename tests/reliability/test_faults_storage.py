"""A full disk under the artifact store: a real, tiny tmpfs (2 MiB) as the LocalStore root.
Storing fails cleanly with ENOSPC, no torn or partial entry is ever visible, the build is
retried with the reason on its train stage (no crash), and once space is freed the next
attempt stores the model correctly."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import REPO_ROOT
from tests.queue.conftest import Counter
from tests.worker.conftest import build_view, events, job_row, new_build, stage_map
from trainhook.artifacts import MANIFEST, LocalStore
from trainhook.db import reading
from trainhook.models import stage_events
from trainhook.runtime import build_runtime
from worker.checkout import checkout_stage
from worker.context import BuildContext
from worker.hash.keys import make_hash_stage
from worker.loop import Worker
from worker.pipeline import Pipeline
from worker.stage import Outcome, SingleStage
from worker.training import make_train_stage

KEY = "ab" * 32
DISK = "2m"


@contextlib.contextmanager
def tmpfs(mount_point: Path, size: str = DISK) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `mount_point` while the block runs."""
    mount_point.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("!!! DISK-FULL TESTS NOT RUN: mounting a small tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"!!! DISK-FULL TESTS NOT RUN: mount -t tmpfs failed: {mounted.stderr}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for this test (unmounted after it)."""
    with tmpfs(tmp_path / "small-disk") as mount_point:
        yield mount_point


def fill(disk: Path, size: int | None = None, name: str = "filler") -> Path:
    """Take `size` bytes (default: every free byte) of `disk` with one file; returns it
    (delete it to free them)."""
    filler = disk / name
    with filler.open("wb", buffering=0) as out, contextlib.suppress(OSError):
        while size is None or filler.stat().st_size < size:
            out.write(b"\0" * 4096)
    return filler


def visible(root: Path) -> list[str]:
    """Everything under the store's root, as paths relative to it."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def model_files(folder: Path, size: int) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.joblib").write_bytes(os.urandom(size))
    (folder / "metrics.json").write_text('{"macro_f1": 0.9}')
    return folder


def test_an_entry_larger_than_the_disk_fails_with_enospc_and_leaves_nothing(
    small_disk: Path, tmp_path: Path
):
    store = LocalStore(small_disk / "artifacts")
    source = model_files(tmp_path / "big", 3 * 1024 * 1024)

    with pytest.raises(OSError) as raised:
        store.publish("models", KEY, source, {"build_id": 1})

    assert raised.value.errno == errno.ENOSPC
    assert store.lookup("models", KEY) is None
    assert visible(store.root) == ["models"]  # no torn entry, no staging dir left behind
    assert os.statvfs(small_disk).f_bfree > 0.9 * os.statvfs(small_disk).f_blocks

    small = model_files(tmp_path / "small", 64 * 1024)
    entry, won = store.publish("models", KEY, small, {"build_id": 2})
    assert won and entry.build_id == 2
    restored = store.fetch("models", KEY, tmp_path / "restored")
    assert restored is not None
    assert (tmp_path / "restored" / "model.joblib").read_bytes() == (
        small / "model.joblib"
    ).read_bytes()


def test_a_full_disk_fails_the_store_cleanly_and_after_freeing_space_it_stores(
    small_disk: Path, tmp_path: Path
):
    store = LocalStore(small_disk / "artifacts")
    (small_disk / "artifacts" / "models").mkdir(parents=True)
    source = model_files(tmp_path / "model", 256 * 1024)
    filler = fill(small_disk)

    with pytest.raises(OSError) as raised:
        store.publish("models", KEY, source, {"build_id": 1})

    assert raised.value.errno == errno.ENOSPC
    assert store.lookup("models", KEY) is None
    assert visible(store.root) == ["models"]

    filler.unlink()
    entry, won = store.publish("models", KEY, source, {"build_id": 1})
    assert won
    assert sorted(entry.files) == ["metrics.json", "model.joblib"]
    assert (store.root / "models" / KEY / MANIFEST).is_file()
    assert store.fetch("models", KEY, tmp_path / "restored") is not None


@pytest.fixture(scope="module")
def sample_csv(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("sample") / "train.csv"
    subprocess.run(
        [sys.executable, "-P", "-m", "trainer", "sample", "--out", str(path), "--rows", "200"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    )
    return path.read_text()


def test_a_build_whose_model_cannot_be_stored_is_retried_then_stores_it(
    small_disk: Path, origin, sample_csv, make_settings, sqlite_url, sqlite_engine
):
    artifacts = small_disk / "artifacts"
    settings = make_settings(
        sqlite_url,
        clone_url=origin.url,
        extra='data = ["data/train.csv"]',
        env={"TRAINHOOK_ARTIFACTS": str(artifacts)},
    )
    store = LocalStore(artifacts)
    sha = origin.commit({"data/train.csv": sample_csv})
    build_id = new_build(sqlite_engine, sha)
    artifacts.mkdir()
    filler = fill(small_disk)
    attempts: list[int] = []

    def build(ctx: BuildContext) -> Outcome:
        attempts.append(ctx.attempt)
        return Outcome(detail="not built in this test")

    def ok(ctx: BuildContext) -> Outcome:
        return Outcome(detail="ok")

    pipeline = Pipeline(
        [
            SingleStage("checkout", checkout_stage),
            SingleStage("test", ok),
            SingleStage("hash", make_hash_stage(store)),
            SingleStage("train", make_train_stage(lambda ctx: None)),
            *(SingleStage(name, build) for name in ("build", "push", "deploy", "vertex")),
        ]
    )

    left_by_the_failure: list[list[str]] = []

    def free_space_then_retry(attempt: int) -> float:
        left_by_the_failure.append(visible(artifacts))
        filler.unlink()  # the operator cleans the disk up; the retry comes at once
        return 0.0

    worker = Worker(
        build_runtime(settings, sqlite_engine), pipeline=pipeline, backoff=free_space_then_retry
    )
    assert worker.run(threading.Event(), burst=True) == 2

    # No torn or partial entry was ever visible: only the (empty) kind directories.
    assert len(left_by_the_failure) == 1 and "models" in left_by_the_failure[0]
    assert [p for p in left_by_the_failure[0] if "/" in p] == []
    trains = train_events(sqlite_engine, build_id)
    assert trains[1][0] == "failed"
    assert "No space left on device" in trains[1][1] and "OSError" in trains[1][1]
    view = build_view(sqlite_engine, build_id)
    assert view["status"] == "succeeded", view["error"]
    assert attempts == [2, 2, 2, 2]  # nothing after train ran on the failed attempt
    key = view["cache_key"]
    entry = store.lookup("models", key)
    assert entry is not None and entry.build_id == build_id
    assert store.fetch("models", key, Path(settings.home) / "restored") is not None
    assert [p for p in visible(artifacts) if ".tmp-" in p] == []
    assert stage_map(sqlite_engine, build_id)["train"]["cache"] == "miss"
    assert [s for _, s in events(sqlite_engine, build_id, "train")] == [
        "running", "failed", "running", "succeeded",
    ]  # fmt: skip


def train_events(engine: sa.Engine, build_id: int, stage: str = "train") -> list[tuple[str, str]]:
    """(status, detail) of every `stage` event of `build_id`, in order."""
    with reading(engine) as conn:
        rows = conn.execute(
            sa.select(stage_events.c.status, stage_events.c.detail)
            .where(stage_events.c.build_id == build_id, stage_events.c.stage == stage)
            .order_by(stage_events.c.id)
        )
        return [(status, detail or "") for status, detail in rows]


def test_a_checkout_that_fills_the_disk_leaves_no_partial_export_in_the_way_of_its_retry(
    tmp_path: Path, origin, make_settings, sqlite_url, sqlite_engine
):
    home = tmp_path / "worker-home"
    settings = make_settings(sqlite_url, clone_url=origin.url, env={"TRAINHOOK_HOME": str(home)})
    sha = origin.commit({"data/blob.bin": os.urandom(1100 * 1024), "app.py": "# app\n"})
    build_id = new_build(sqlite_engine, sha)
    with tmpfs(settings.work_dir) as work:  # the work dir is a 2 MiB disk; mirrors are not
        fill(work, 700 * 1024, "other-data")
        freeable = fill(work, 500 * 1024, "old-logs")  # 848 KiB left: the export needs 1.1 MiB

        def free_some_then_retry(attempt: int) -> float:
            # The operator frees 500 KiB: enough, once nothing else is in the way.
            freeable.unlink(missing_ok=True)
            return 0.0

        counter = Counter({"checkout": checkout_stage})
        worker = Worker(
            build_runtime(settings, sqlite_engine),
            pipeline=counter.pipeline(),
            backoff=free_some_then_retry,
        )
        worker.run(threading.Event(), burst=True)

        checkout = train_events(sqlite_engine, build_id, "checkout")
        assert checkout[1][0] == "failed" and "No space left on device" in checkout[1][1]
        view = build_view(sqlite_engine, build_id)
        assert view["status"] == "succeeded", view["error"]
        assert job_row(sqlite_engine, build_id).attempts == 2
        exports = [p for p in (work / settings.repos[0].slug).iterdir() if p.is_dir()]
        assert (
            len(exports) == 1 and (exports[0] / "data" / "blob.bin").stat().st_size == 1100 * 1024
        )
