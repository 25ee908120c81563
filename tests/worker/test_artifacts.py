"""Bundles and the local registry: deterministic, idempotent. (Cache entries: tests/cache.)"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest
import sklearn

from trainer import generate_sample, train
from trainhook_runtime import IncompatibleModel
from worker.bundle import MANIFEST, bundle_entries, write_bundle
from worker.local.healthcheck import check
from worker.local.release import LocalRegistry, Releases
from worker.outcome import StageFailed


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    source = tmp_path / "src"
    (source / "data").mkdir(parents=True)
    (source / "app.py").write_text("print('app')\n")
    (source / "data" / "train.csv").write_text("text,label\n")
    # The user's own `trainer` package (Vertex AI's conventional name for training code).
    (source / "trainer").mkdir()
    (source / "trainer" / "__init__.py").write_text("# the user's trainer\n")
    (source / "trainer" / "task.py").write_text("print('user training code')\n")
    (source / "run.sh").write_text("#!/bin/sh\n")
    (source / "run.sh").chmod(0o775)
    os.symlink("data/train.csv", source / "train.csv")
    return source


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    names = ("model.joblib", "vectorizer.joblib", "model_manifest.json", "metrics.json")
    for name in (*names, "model_card.md"):
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


def test_bundle_holds_the_checkout_byte_for_byte_the_model_the_runtime_and_a_manifest(
    tmp_path, checkout, model_dir
):
    bundle = write_bundle(
        bundle_entries(checkout, model_dir, {"version": "b1-abc"}), tmp_path / "b.tar.gz", "b1"
    )
    with tarfile.open(bundle.path) as tar:
        names = set(tar.getnames())
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
        manifest = json.load(tar.extractfile(MANIFEST))  # type: ignore[arg-type]
        link = tar.getmember("train.csv")
    checkout_files = {
        p.relative_to(checkout).as_posix(): p.read_bytes()
        for p in checkout.rglob("*")
        if p.is_file() and not p.is_symlink()
    }
    assert {name: files[name] for name in checkout_files} == checkout_files
    assert not [n for n in names if n.startswith("trainer/") and n not in checkout_files]
    assert {"trainhook_runtime/__init__.py", "trainhook_runtime/text.py"} <= names
    assert files["model.joblib"] == b"fresh model.joblib"
    assert files["model_manifest.json"] == b"fresh model_manifest.json"
    assert manifest == {"version": "b1-abc"}
    assert link.issym() and link.linkname == "data/train.csv"
    assert not [n for n in names if "__pycache__" in n]


@pytest.mark.parametrize(
    "committed",
    ["model.joblib", "model_manifest.json", "trainhook_runtime/__init__.py", ".trainhook"],
)
def test_a_checkout_path_the_bundle_needs_fails_the_build_naming_it(
    tmp_path, checkout, model_dir, committed
):
    (checkout / committed).parent.mkdir(parents=True, exist_ok=True)
    (checkout / committed).write_text("the user's own file")

    with pytest.raises(StageFailed, match="never overwrites") as failure:
        bundle_entries(checkout, model_dir, {})

    assert committed in str(failure.value)
    assert (checkout / committed).read_text() == "the user's own file"


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


def test_the_health_check_refuses_a_model_for_another_scikit_learn_naming_both(tmp_path):
    generate_sample(tmp_path / "data.csv", rows=300, seed=0)
    train(tmp_path / "data.csv", tmp_path / "model")
    assert len(check(tmp_path / "model")) == 3
    manifest_file = tmp_path / "model" / "model_manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["versions"]["scikit-learn"] = "0.23.0"
    manifest_file.write_text(json.dumps(manifest))

    with pytest.raises(IncompatibleModel, match=rf"0\.23\.0.*{sklearn.__version__}"):
        check(tmp_path / "model")
