"""The source bucket on fake-gcs-server: create-if-absent uploads, the deployed-model record,
and the builder TRAINHOOK_BUILDER=cloudbuild selects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.cloudbuild.fake_server import Plan
from trainhook.gcs import make_gcs_client
from worker.cloudbuild.builder import CloudBuilder
from worker.cloudbuild.source import SourceStore
from worker.context import Bundle
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
