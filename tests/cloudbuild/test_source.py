"""The source bucket on fake-gcs-server: create-if-absent uploads, the deployed-model record,
and the builder TRAINHOOK_BUILDER=cloudbuild selects."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.cloudbuild.conftest import ready
from tests.cloudbuild.fake_server import Plan
from trainhook.gcs import make_gcs_client
from worker.cloudbuild.builder import CloudBuilder
from worker.cloudbuild.source import SourceStore
from worker.cloudbuild.submit import upload_source
from worker.context import Bundle
from worker.outcome import StageFailed
from worker.pipeline import builder_for


def store_for(settings: Any) -> SourceStore:
    return SourceStore(make_gcs_client(settings.gcp_project), settings.source_bucket)


def bundle(tmp_path: Path, data: bytes = b"tar.gz bytes") -> Bundle:
    path = tmp_path / "source.tar.gz"
    path.write_bytes(data)
    return Bundle(path=path, version="b1-abc", digest="f" * 64, size=len(data))


class BlindBlob:
    """A blob whose existence check misses an object another worker has just written."""

    def __init__(self, blob: Any) -> None:
        self.blob = blob

    def exists(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.blob, name)


def test_an_upload_racing_another_worker_keeps_the_first_object(settings, tmp_path):
    store = store_for(settings)
    first = bundle(tmp_path)
    assert store.upload("slug", first)[1] == f"uploaded {first.size} bytes"
    real_blob = store.bucket.blob
    store.bucket.blob = lambda name: BlindBlob(real_blob(name))  # type: ignore[method-assign]

    (tmp_path / "other").mkdir()
    uri, action = store.upload("slug", bundle(tmp_path / "other", b"different bytes"))

    assert action == "uploaded meanwhile by another worker"  # if_generation_match=0 held
    assert real_blob(uri.split("/", 3)[3]).download_as_bytes() == b"tar.gz bytes"


def test_an_older_build_never_overwrites_the_newer_deployed_record(settings):
    store = store_for(settings)
    assert store.record_deployed("slug", {"build_id": 5, "metrics": {"macro_f1": 0.9}})
    assert not store.record_deployed("slug", {"build_id": 3, "metrics": {"macro_f1": 0.1}})
    assert store.record_deployed("slug", {"build_id": 6, "metrics": {"macro_f1": 0.7}})
    record = store.read_deployed("slug")
    assert record is not None and record["build_id"] == 6


def test_an_unreadable_deployed_record_counts_as_none(settings):
    store = store_for(settings)
    store.bucket.blob(store._deployed_name("slug")).upload_from_string(b"not json")
    assert store.read_deployed("slug") is None


def test_the_cloudbuild_setting_selects_the_cloud_builder_over_rest(settings, fake, tmp_path):
    fake.plan = Plan()
    builder = builder_for(settings)
    assert isinstance(builder, CloudBuilder)
    found = list(builder.client.list_builds(request={"parent": builder.parent}))
    assert found == [] and fake.requests[-1][1].endswith("/locations/europe-west1/builds")


def test_a_repository_with_its_own_trainer_package_keeps_every_byte_of_it_in_the_source(
    settings, db, tmp_path
):
    ctx = ready(settings, db, tmp_path)
    assert ctx.source is not None
    user_code = {
        "trainer/__init__.py": b"",
        "trainer/task.py": b"# Vertex AI custom training code\nprint('train')\n",
        "trainer/model.py": b"WEIGHTS = [0.1, 0.2]\n",
        "trainer/data/vocab.txt": b"hello\nworld\n",
    }
    for name, data in user_code.items():
        (ctx.source / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx.source / name).write_bytes(data)

    inputs = upload_source(ctx, store_for(settings))

    bucket, name = inputs.source.removeprefix("gs://").split("/", 1)
    blob = make_gcs_client(settings.gcp_project).bucket(bucket).blob(name)
    with tarfile.open(fileobj=io.BytesIO(blob.download_as_bytes())) as tar:
        trainer_files = {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.name.startswith("trainer/")
        }
        names = set(tar.getnames())
    assert trainer_files == user_code
    assert {"trainhook_runtime/text.py", "model.joblib", "app.py"} <= names


def test_a_source_that_already_has_the_runtime_directory_is_refused_naming_it(
    settings, db, tmp_path
):
    ctx = ready(settings, db, tmp_path)
    assert ctx.source is not None
    (ctx.source / "trainhook_runtime").mkdir()
    (ctx.source / "trainhook_runtime" / "__init__.py").write_text("# a copy the user made\n")

    with pytest.raises(StageFailed, match=r"trainhook_runtime/__init__\.py"):
        upload_source(ctx, store_for(settings))
