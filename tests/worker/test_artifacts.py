"""Bundles and the local registry: deterministic, idempotent. (Cache entries: tests/cache.)"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest

from worker.bundle import MANIFEST, bundle_entries, write_bundle
from worker.local.release import LocalRegistry, Releases


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    source = tmp_path / "src"
    (source / "data").mkdir(parents=True)
    (source / "app.py").write_text("print('app')\n")
    (source / "data" / "train.csv").write_text("text,label\n")
    (source / "model.joblib").write_text("stale model committed by someone")
    (source / "run.sh").write_text("#!/bin/sh\n")
    (source / "run.sh").chmod(0o775)
    os.symlink("data/train.csv", source / "train.csv")
    return source


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("model.joblib", "vectorizer.joblib", "metrics.json", "model_card.md"):
        (folder / name).write_text(f"fresh {name}")
    return folder


def test_bundle_bytes_depend_only_on_content(tmp_path, checkout, model_dir):
    first = write_bundle(bundle_entries(checkout, model_dir, {"v": 1}), tmp_path / "a.tar.gz", "v")
    for path in [*checkout.rglob("*"), *model_dir.iterdir()]:
        if not path.is_symlink():
            os.utime(path, (1_000_000, 1_000_000))
    second = write_bundle(bundle_entries(checkout, model_dir, {"v": 1}), tmp_path / "b.tar.gz", "v")
    assert first.digest == second.digest and first.size == second.size

    (checkout / "app.py").write_text("print('changed')\n")
    third = write_bundle(bundle_entries(checkout, model_dir, {"v": 1}), tmp_path / "c.tar.gz", "v")
    assert third.digest != first.digest

    with tarfile.open(first.path) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}
    modes = {m.name: m.mode for m in members}
    assert (modes["run.sh"], modes["app.py"]) == (0o755, 0o644)


def test_bundle_holds_checkout_fresh_model_vendored_trainer_and_manifest(
    tmp_path, checkout, model_dir
):
    bundle = write_bundle(
        bundle_entries(checkout, model_dir, {"version": "b1-abc"}), tmp_path / "b.tar.gz", "b1"
    )
    with tarfile.open(bundle.path) as tar:
        names = set(tar.getnames())
        model = tar.extractfile("model.joblib").read()  # type: ignore[union-attr]
        manifest = json.load(tar.extractfile(MANIFEST))  # type: ignore[arg-type]
        link = tar.getmember("train.csv")
    assert {"app.py", "data/train.csv", "trainer/__init__.py", "model_card.md"} <= names
    assert model == b"fresh model.joblib"  # the trained model wins over a committed one
    assert manifest == {"version": "b1-abc"}
    assert link.issym() and link.linkname == "data/train.csv"
    assert not [n for n in names if "__pycache__" in n]


def test_pushing_the_same_bundle_twice_is_a_no_op(tmp_path, checkout, model_dir):
    bundle = write_bundle(bundle_entries(checkout, model_dir, {}), tmp_path / "b1.tar.gz", "b1")
    registry = LocalRegistry(tmp_path / "registry")

    path, first = registry.push("slug", bundle, {"sha": "abc", "build_id": 1})
    created = registry.manifest("slug", "b1")["created"]  # type: ignore[index]
    _, second = registry.push("slug", bundle, {"sha": "abc", "build_id": 1})

    assert (first, second) == ("pushed", "already in registry")
    manifest = registry.manifest("slug", "b1")
    assert manifest is not None
    assert manifest["digest"] == bundle.digest and manifest["created"] == created
    assert manifest["sha"] == "abc" and manifest["build_id"] == 1
    assert path.read_bytes() == bundle.path.read_bytes()


def test_switching_current_replaces_the_symlink_in_one_step(tmp_path):
    releases = Releases(tmp_path / "releases", "slug")
    for version in ("b1", "b2"):
        (releases.folder / version).mkdir(parents=True)

    assert releases.switch("b1") is None
    assert releases.switch("b2") == "b1"

    assert os.readlink(releases.current) == "b2"
    assert [p.name for p in releases.folder.iterdir() if p.name.startswith(".")] == []


def test_new_bytes_for_the_serving_version_never_change_it_in_place(tmp_path):
    releases = Releases(tmp_path / "releases", "slug")
    old = write_bundle({"app.py": b"old"}, tmp_path / "old.tar.gz", "b1")
    new = write_bundle({"app.py": b"retrained"}, tmp_path / "new.tar.gz", "b1")
    releases.switch(releases.unpack(old.path, "b1", old.digest).name)

    again = releases.unpack(old.path, "b1", old.digest)
    other = releases.unpack(new.path, "b1", new.digest)

    assert again.name == "b1"  # same bytes: reused
    assert other.name == f"b1.{new.digest[:12]}"
    assert (releases.current / "app.py").read_bytes() == b"old"
    assert (other / "app.py").read_bytes() == b"retrained"
