"""The artifact store contract, run over every implementation: a local directory and
Cloud Storage (google-cloud-storage against fake-gcs-server)."""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from trainhook.artifacts import (
    MANIFEST,
    ArtifactStore,
    GcsStore,
    LocalStore,
    open_store,
)
from trainhook.gcs import parse_gs_url

KEY = "5e" * 32
OTHER = "a1" * 32


@dataclass
class Backend:
    """A store plus a way to damage what it holds, as a crash, a bug or bit rot would."""

    store: ArtifactStore
    gcs: Any = None

    def _object(self, kind: str, key: str, name: str) -> Any:
        assert isinstance(self.store, GcsStore)
        entry = self.store.lookup(kind, key)
        assert entry is not None
        sha = entry.files[name].sha256
        return self.store._bucket.blob(self.store._name(kind, key, "objects", sha))

    def overwrite(self, kind: str, key: str, name: str, data: bytes) -> None:
        if isinstance(self.store, LocalStore):
            (self.store.entry_dir(kind, key) / name).write_bytes(data)
        else:
            self._object(kind, key, name).upload_from_string(data)

    def remove(self, kind: str, key: str, name: str) -> None:
        if isinstance(self.store, LocalStore):
            (self.store.entry_dir(kind, key) / name).unlink()
        else:
            self._object(kind, key, name).delete()

    def write_manifest(self, kind: str, key: str, data: bytes) -> None:
        if isinstance(self.store, LocalStore):
            folder = self.store.entry_dir(kind, key)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / MANIFEST).write_bytes(data)
        else:
            blob = self.store._bucket.blob(self.store._name(kind, key, MANIFEST))
            blob.upload_from_string(data)

    def read_manifest(self, kind: str, key: str) -> bytes:
        if isinstance(self.store, LocalStore):
            return (self.store.entry_dir(kind, key) / MANIFEST).read_bytes()
        return self.store._bucket.blob(self.store._name(kind, key, MANIFEST)).download_as_bytes()


@pytest.fixture(params=["local", "gcs"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        return Backend(open_store(str(tmp_path / "artifacts")))
    client = request.getfixturevalue("gcs_client")
    bucket = request.getfixturevalue("bucket")
    return Backend(open_store(f"gs://{bucket}/cache/v1", client=client), client)


def files(folder: Path, content: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in content.items():
        (folder / name).write_bytes(data)
    return folder


MODEL = {"model.joblib": b"M" * 70_000, "vectorizer.joblib": b"V" * 1000, "metrics.json": b"{}"}


def restored(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_published_entry_is_restored_byte_for_byte_with_its_meta(backend, tmp_path):
    store = backend.store
    entry, won = store.publish("models", KEY, files(tmp_path / "src", MODEL), {"build_id": 7})

    assert won and entry.build_id == 7 and entry.size == sum(map(len, MODEL.values()))
    assert entry.files["model.joblib"].sha256 == hashlib.sha256(MODEL["model.joblib"]).hexdigest()
    found = store.lookup("models", KEY)
    assert found is not None and found.meta == {"build_id": 7} and found.files == entry.files
    again = store.fetch("models", KEY, tmp_path / "out")
    assert again is not None and restored(tmp_path / "out") == MODEL


def test_an_absent_key_is_a_miss_without_warning(backend, tmp_path):
    warnings: list[str] = []
    assert backend.store.lookup("models", KEY, warnings.append) is None
    assert backend.store.fetch("models", KEY, tmp_path / "out", warnings.append) is None
    assert warnings == []


def test_kinds_are_separate_namespaces(backend, tmp_path):
    backend.store.publish("nltk", KEY, files(tmp_path / "src", {"data.tar.gz": b"t"}), {})
    assert backend.store.lookup("models", KEY) is None
    assert backend.store.lookup("nltk", KEY) is not None


def test_publishing_a_stored_key_again_keeps_the_first_entry(backend, tmp_path):
    store = backend.store
    store.publish("models", KEY, files(tmp_path / "a", MODEL), {"build_id": 1})
    entry, won = store.publish(
        "models", KEY, files(tmp_path / "b", {**MODEL, "model.joblib": b"other"}), {"build_id": 2}
    )

    assert not won and entry.build_id == 1
    assert store.fetch("models", KEY, tmp_path / "out") is not None
    assert restored(tmp_path / "out") == MODEL


def test_racing_publishers_store_one_entry_and_all_get_the_winners(backend, tmp_path):
    store = backend.store
    sources = [
        files(tmp_path / f"w{i}", {**MODEL, "model.joblib": f"worker {i}".encode() * 100})
        for i in range(6)
    ]
    barrier = threading.Barrier(len(sources))
    results: list[tuple[int | None, bool]] = []

    def publish(i: int) -> None:
        barrier.wait()
        entry, won = store.publish("models", KEY, sources[i], {"build_id": i})
        results.append((entry.build_id, won))

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(len(sources))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    winners = [build for build, won in results if won]
    assert len(winners) == 1 and len(results) == len(sources)
    assert {build for build, _ in results} == set(winners)  # the losers use the winner's
    assert store.fetch("models", KEY, tmp_path / "out") is not None
    model = (tmp_path / "out" / "model.joblib").read_bytes()
    assert model == f"worker {winners[0]}".encode() * 100
    if isinstance(store, LocalStore):
        assert [p.name for p in (store.root / "models").iterdir()] == [KEY]  # no temp dirs


def test_a_corrupted_file_is_a_miss_with_a_warning_then_replaced(backend, tmp_path):
    store = backend.store
    store.publish("models", KEY, files(tmp_path / "src", MODEL), {"build_id": 1})
    backend.overwrite("models", KEY, "model.joblib", b"X" * len(MODEL["model.joblib"]))
    warnings: list[str] = []

    assert store.lookup("models", KEY) is not None  # sizes still match: only a restore can tell
    assert store.fetch("models", KEY, tmp_path / "out", warnings.append) is None

    assert len(warnings) == 1 and "model.joblib" in warnings[0] and "sha256" in warnings[0]
    assert list((tmp_path / "out").iterdir()) == []  # nothing half-restored
    assert store.lookup("models", KEY) is None  # evicted: the next publisher repairs it
    entry, won = store.publish("models", KEY, files(tmp_path / "again", MODEL), {"build_id": 2})
    assert won and entry.build_id == 2
    assert store.fetch("models", KEY, tmp_path / "out") is not None
    assert restored(tmp_path / "out") == MODEL


def test_a_truncated_file_is_a_miss_at_lookup(backend, tmp_path):
    backend.store.publish("models", KEY, files(tmp_path / "src", MODEL), {})
    backend.overwrite("models", KEY, "vectorizer.joblib", b"V" * 10)
    warnings: list[str] = []

    assert backend.store.lookup("models", KEY, warnings.append) is None
    assert "vectorizer.joblib has 10 bytes" in warnings[0]


def test_an_entry_missing_a_file_is_a_miss_and_is_replaced_on_publish(backend, tmp_path):
    store = backend.store
    store.publish("models", KEY, files(tmp_path / "src", MODEL), {"build_id": 1})
    backend.remove("models", KEY, "metrics.json")
    warnings: list[str] = []

    assert store.lookup("models", KEY, warnings.append) is None
    assert "metrics.json is missing" in warnings[0]
    entry, won = store.publish("models", KEY, files(tmp_path / "b", MODEL), {"build_id": 2})
    assert won and entry.build_id == 2 and store.lookup("models", KEY) == entry


@pytest.mark.parametrize(
    "manifest",
    [b'{"schema": 1, "kind": "models", "key": "', b"", b"\xff\xfe", b'{"schema": 99}'],
    ids=["torn", "empty", "binary", "unknown-schema"],
)
def test_a_broken_manifest_is_a_miss_with_a_warning_never_an_error(backend, tmp_path, manifest):
    backend.write_manifest("models", KEY, manifest)
    warnings: list[str] = []

    assert backend.store.lookup("models", KEY, warnings.append) is None
    assert backend.store.fetch("models", KEY, tmp_path / "out", warnings.append) is None
    assert warnings and "manifest" in warnings[0]
    entry, won = backend.store.publish("models", KEY, files(tmp_path / "src", MODEL), {})
    assert won and backend.store.lookup("models", KEY) == entry


def test_a_manifest_copied_under_another_key_is_refused(backend, tmp_path):
    backend.store.publish("models", KEY, files(tmp_path / "src", MODEL), {})
    backend.write_manifest("models", OTHER, backend.read_manifest("models", KEY))
    warnings: list[str] = []

    assert backend.store.lookup("models", OTHER, warnings.append) is None
    assert f"models/{KEY}" in warnings[0]


def test_the_manifest_records_size_and_sha256_of_every_file(backend, tmp_path):
    backend.store.publish("models", KEY, files(tmp_path / "src", MODEL), {"build_id": 3})
    manifest = json.loads(backend.read_manifest("models", KEY))
    assert manifest["files"] == {
        name: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for name, data in MODEL.items()
    }
    assert (manifest["kind"], manifest["key"], manifest["meta"]) == ("models", KEY, {"build_id": 3})


@pytest.mark.parametrize("kind,key", [("Models", KEY), ("models", "../etc"), ("models", "AB" * 32)])
def test_names_outside_the_grammar_are_refused(backend, tmp_path, kind, key):
    with pytest.raises(ValueError):
        backend.store.lookup(kind, key)


def test_only_regular_files_can_be_published(backend, tmp_path):
    source = files(tmp_path / "src", MODEL)
    (source / "sub").mkdir()
    with pytest.raises(ValueError, match="'sub' is not a regular file"):
        backend.store.publish("models", KEY, source, {})
    assert backend.store.lookup("models", KEY) is None


def test_gs_locations_name_a_bucket_and_an_optional_prefix():
    assert parse_gs_url("gs://my-bucket/cache/v1") == ("my-bucket", "cache/v1")
    assert parse_gs_url("gs://my-bucket") == ("my-bucket", "")
    for bad in ("gs://", "gs://UPPER/x", "s3://b/x", "gs://b/a//b"):
        with pytest.raises(ValueError):
            parse_gs_url(bad)


def test_gs_location_uses_the_emulator_named_by_the_environment(bucket, tmp_path, fake_gcs):
    store = open_store(f"gs://{bucket}/p")  # no client given: STORAGE_EMULATOR_HOST is used
    assert isinstance(store, GcsStore) and store.location == f"gs://{bucket}/p"
    store.publish("models", KEY, files(tmp_path / "src", MODEL), {})
    assert store.lookup("models", KEY) is not None


def test_a_local_entry_without_manifest_is_a_miss_and_is_replaced(tmp_path):
    store = LocalStore(tmp_path / "artifacts")
    leftover = files(store.entry_dir("models", KEY), {"model.joblib": b"from an older version"})
    warnings: list[str] = []

    assert store.lookup("models", KEY, warnings.append) is None
    assert "no manifest" in warnings[0]
    _, won = store.publish("models", KEY, files(tmp_path / "src", MODEL), {})
    assert won and (leftover / "model.joblib").read_bytes() == MODEL["model.joblib"]
    assert [p.name for p in (store.root / "models").iterdir()] == [KEY]


def test_a_forced_publish_replaces_the_stored_entry_and_wins(backend, tmp_path):
    store = backend.store
    store.publish("models", KEY, files(tmp_path / "a", MODEL), {"build_id": 1})
    ours = {**MODEL, "model.joblib": b"forced"}
    entry, won = store.publish(
        "models", KEY, files(tmp_path / "b", ours), {"build_id": 2}, replace=True
    )

    assert won and entry.build_id == 2
    found = store.lookup("models", KEY)
    assert found is not None and found.build_id == 2 and found.version == entry.version
    assert store.fetch("models", KEY, tmp_path / "out") is not None
    assert restored(tmp_path / "out") == ours
    if isinstance(store, GcsStore):  # the replaced entry's own files are gone
        names = {b.name.rsplit("/", 1)[-1] for b in store.client.list_blobs(store._bucket)}
        assert hashlib.sha256(MODEL["model.joblib"]).hexdigest() not in names
    else:
        assert [p.name for p in (store.root / "models").iterdir()] == [KEY]  # nothing aside


def test_a_forced_publish_racing_other_publishers_gets_its_own_entry(backend, tmp_path):
    store = backend.store
    sources = [
        files(tmp_path / f"w{i}", {**MODEL, "model.joblib": f"worker {i}".encode() * 100})
        for i in range(4)
    ]
    barrier = threading.Barrier(len(sources))
    results: dict[int, tuple[int | None, bool]] = {}
    errors: list[BaseException] = []

    def publish(i: int) -> None:
        barrier.wait()
        try:
            entry, won = store.publish("models", KEY, sources[i], {"build_id": i}, replace=i == 0)
        except BaseException as exc:  # a thread's exception would only be a warning
            errors.append(exc)
            raise
        results[i] = (entry.build_id, won)

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(len(sources))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []  # every publisher got an entry, the ones the forced one beat too
    assert results[0] == (0, True)  # whoever was first, the forced one uses its own
    found = store.lookup("models", KEY)
    assert found is not None
    assert store.fetch("models", KEY, tmp_path / "out") is not None
    assert (tmp_path / "out" / "model.joblib").read_bytes() == (
        f"worker {found.build_id}".encode() * 100
    )


def test_a_forced_publish_over_a_broken_entry_replaces_it(backend, tmp_path):
    backend.write_manifest("models", KEY, b"torn")
    entry, won = backend.store.publish(
        "models", KEY, files(tmp_path / "src", MODEL), {"build_id": 5}, replace=True
    )
    assert won and backend.store.lookup("models", KEY) == entry
