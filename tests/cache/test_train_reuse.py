"""The train stage over the artifact store: restore on a hit, train and store on a miss,
survive corrupt entries and racing workers, train on LFS and gs:// data, and restore NLTK
data instead of downloading it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading

import pytest

from tests.cache.harness import fake_model, nltk_index
from tests.conftest import REPO_ROOT
from tests.support.gitrepo import GitRepo
from tests.worker.conftest import logs
from worker.nltkcache import prepare_nltk
from worker.stage import StageFailed

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sample_csv(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("sample") / "train.csv"
    subprocess.run(
        [sys.executable, "-P", "-m", "trainer", "sample", "--out", str(path), "--rows", "240"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    )
    return path.read_text()


def test_a_stored_model_is_restored_and_the_trainer_never_runs(builds, origin, sample_csv):
    b = builds()
    sha = origin.commit({"data/train.csv": sample_csv})
    ctx, _ = b.hash(sha)
    assert ctx.keys is not None
    b.store.publish("models", ctx.keys.model, fake_model(b.settings.home / "m"), {"build_id": 41})

    ctx, _detail, outcome = b.train(sha)

    assert outcome.cache == "hit"
    assert (outcome.detail or "").startswith(
        f"model cache hit: key {ctx.keys.model[:12]} produced by build #41"
    )
    assert ctx.model_dir is not None
    assert (ctx.model_dir / "model.joblib").read_text() == "stored model.joblib"
    assert json.loads((ctx.model_dir / "meta.json").read_text())["build_id"] == 41
    assert "train" not in logs(b.engine, ctx.build.id)  # no trainer output at all
    assert ctx.recorder.metrics.cache.labels(level="model", result="hit")._value.get() == 1


def test_a_corrupt_stored_model_is_retrained_with_a_warning_and_replaced(
    builds, origin, sample_csv
):
    b = builds()
    sha = origin.commit({"data/train.csv": sample_csv})
    ctx, _ = b.hash(sha)
    assert ctx.keys is not None
    key = ctx.keys.model
    b.store.publish("models", key, fake_model(b.settings.home / "m"), {"build_id": 41})
    stored = b.settings.artifacts_path / "models" / key / "model.joblib"
    stored.write_text("X" * len(stored.read_text()))  # bit rot: same size, other bytes

    ctx, detail, outcome = b.train(sha)

    assert "model: hit" in detail  # sizes matched: only the restore could tell
    assert outcome.cache == "miss" and (outcome.detail or "").startswith("trained (cache miss)")
    assert "does not match its sha256" in logs(b.engine, ctx.build.id)["train"]
    entry = b.store.lookup("models", key)
    assert entry is not None and entry.build_id == ctx.build.id  # repaired by this build
    assert b.store.fetch("models", key, b.settings.home / "check") is not None


def test_two_workers_training_one_key_store_one_entry_and_both_builds_succeed(
    builds, origin, sample_csv
):
    b = builds()
    sha = origin.commit({"data/train.csv": sample_csv})
    contexts = [b.hash(sha)[0] for _ in range(2)]
    barrier = threading.Barrier(2)
    outcomes: dict[int, object] = {}

    def train(i: int) -> None:
        barrier.wait()
        outcomes[i] = b.train_stage(contexts[i])

    threads = [threading.Thread(target=train, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    key = contexts[0].keys.model  # type: ignore[union-attr]
    assert [p.name for p in (b.settings.artifacts_path / "models").iterdir()] == [key]
    entry = b.store.lookup("models", key)
    assert entry is not None and entry.build_id in {c.build.id for c in contexts}
    winner = next(c for c in contexts if c.build.id == entry.build_id)
    loser = next(c for c in contexts if c.build.id != entry.build_id)
    assert "using its model" in outcomes[contexts.index(loser)].detail  # type: ignore[attr-defined]
    models = {
        c.build.id: (c.model_dir / "model.joblib").read_bytes()  # type: ignore[operator]
        for c in contexts
    }
    stored = entry.files["model.joblib"].sha256
    assert {hashlib.sha256(m).hexdigest() for m in models.values()} == {stored}
    assert winner.model_dir != loser.model_dir


LFS = "version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"


def lfs_commit(origin: GitRepo, content: str) -> tuple[str, str]:
    oid = hashlib.sha256(content.encode()).hexdigest()
    sha = origin.commit({"data/train.csv": LFS.format(oid=oid, size=len(content.encode()))})
    return sha, oid


def test_lfs_data_without_its_object_fails_train_clearly_unless_cached(builds, origin, sample_csv):
    b = builds()
    sha, oid = lfs_commit(origin, sample_csv)

    with pytest.raises(StageFailed, match=r"data/train\.csv is a Git LFS pointer") as failed:
        b.train(sha)
    assert f"lfs:sha256:{oid}" in str(failed.value) and "git lfs fetch" in str(failed.value)

    ctx, _ = b.hash(sha)
    assert ctx.keys is not None
    b.store.publish("models", ctx.keys.model, fake_model(b.settings.home / "m"), {"build_id": 3})
    _, _, outcome = b.train(sha)
    assert outcome.cache == "hit"


def test_lfs_data_trains_on_the_object_fetched_into_the_mirror(builds, origin, sample_csv):
    b = builds()
    sha, oid = lfs_commit(origin, sample_csv)
    ctx, _ = b.hash(sha)  # clones the mirror
    assert ctx.mirror is not None
    objects = ctx.mirror / "lfs" / "objects" / oid[:2] / oid[2:4]
    objects.mkdir(parents=True)
    (objects / oid).write_text(sample_csv)  # what `git lfs fetch` leaves in a bare mirror

    ctx, _detail, outcome = b.train(sha)

    assert outcome.cache == "miss"
    assert ctx.metrics is not None and ctx.metrics["rows"]["read"] == 240


def test_gs_data_trains_on_the_generation_that_was_keyed(builds, origin, sample_csv, gcs_client):
    bucket = gcs_client.bucket("th-versioned-" + hashlib.md5(origin.url.encode()).hexdigest()[:8])
    bucket.versioning_enabled = True
    gcs_client.create_bucket(bucket)
    blob = bucket.blob("tweets.csv")
    blob.upload_from_string(sample_csv)
    b = builds(f'data = ["gs://{bucket.name}/tweets.csv"]', gcs=gcs_client)
    ctx, _detail = b.hash(origin.commit({"app.py": "x = 1\n"}))
    assert ctx.data is not None and ctx.data.source == "gs"
    blob.upload_from_string("text,label\nrewritten,pos\n")  # a newer upload meanwhile

    outcome = b.train_stage(ctx)

    assert outcome.cache == "miss"
    assert ctx.metrics is not None and ctx.metrics["rows"]["read"] == 240
    assert (
        f"downloading gs://{bucket.name}/tweets.csv (generation"
        in logs(b.engine, ctx.build.id)["train"]
    )


def test_gs_data_overwritten_before_training_fails_train_clearly(
    builds, origin, sample_csv, bucket, gcs_client
):
    blob = gcs_client.bucket(bucket).blob("tweets.csv")
    blob.upload_from_string(sample_csv)
    b = builds(f'data = ["gs://{bucket}/tweets.csv"]', gcs=gcs_client)
    ctx, _ = b.hash(origin.commit({"app.py": "x = 1\n"}))
    blob.upload_from_string("text,label\nrewritten,pos\n")  # no versioning: the old one is gone

    with pytest.raises(StageFailed, match="changed after the cache decision: generation"):
        b.train_stage(ctx)


def test_nltk_data_is_downloaded_once_then_restored_from_the_store(
    builds, origin, sample_csv, tmp_path
):
    index = nltk_index(tmp_path / "index")
    extra = 'data = ["data/train.csv"]\nparams = { stopwords = true }'
    b = builds(extra, env={"TRAINHOOK_NLTK_INDEX": index})
    ctx, detail, outcome = b.train(origin.commit({"data/train.csv": sample_csv}))

    assert "nltk: miss (first recorded build of main)" in detail
    assert "nltk: miss (not stored yet; downloaded stopwords and stored)" in (outcome.detail or "")
    assert ctx.metrics is not None and ctx.metrics["nltk"]["stopwords_source"] == "nltk"
    assert ctx.keys is not None and b.store.lookup("nltk", ctx.keys.nltk) is not None

    # Another machine: no local NLTK data, and the index is gone. Restored from the store.
    shutil.rmtree(b.settings.home / "cache" / "nltk")
    for served in (tmp_path / "index").iterdir():
        served.unlink()
    ctx2, detail2 = b.hash(origin.commit({"data/train.csv": sample_csv + "fine thanks,neu\n"}))
    assert "nltk: hit (NLTK version and packages unchanged; stored by build #" in detail2
    folder = prepare_nltk(ctx2)
    assert folder is not None and (folder / "corpora" / "stopwords" / "english").is_file()
    assert ctx2.cache is not None and ctx2.cache.nltk.result == "hit"
    assert ctx2.cache.nltk.why.startswith("restored from the store (stored by build #")

    ctx3, _ = b.hash(ctx2.build.sha)
    assert prepare_nltk(ctx3) == folder
    assert (
        ctx3.cache is not None and ctx3.cache.nltk.why == "data directory already on this machine"
    )


def test_an_nltk_download_that_fails_stores_nothing_and_training_degrades(
    builds, origin, sample_csv, tmp_path
):
    index = nltk_index(tmp_path / "index")
    (tmp_path / "index" / "stopwords.zip").write_bytes(b"not the zip the index describes")
    extra = 'data = ["data/train.csv"]\nparams = { stopwords = true }'
    b = builds(extra, env={"TRAINHOOK_NLTK_INDEX": index})
    ctx, _ = b.hash(origin.commit({"data/train.csv": sample_csv}))

    folder = prepare_nltk(ctx)

    assert ctx.cache is not None and ctx.keys is not None
    assert ctx.cache.nltk.result == "miss"
    assert ctx.cache.nltk.why == "not stored yet; download failed, training uses fallbacks"
    assert folder is not None and not (folder / "corpora" / "stopwords").exists()
    assert b.store.lookup("nltk", ctx.keys.nltk) is None
    assert not (b.settings.home / "cache" / "nltk" / ctx.keys.nltk).exists()


def test_a_test_that_rewrites_the_data_and_restores_its_mtime_cannot_poison_the_model(
    builds, origin, sample_csv
):
    from tests.support.gitrepo import git
    from worker.checkout import checkout_stage

    b = builds()
    sha = origin.commit({"data/train.csv": sample_csv})
    ctx = b.context(sha)
    checkout_stage(ctx)
    # What a hostile (or careless) test could do to the export before the sandbox: rewrite
    # the data, then give it back the mtime `git archive` gave it (the commit time).
    exported = ctx.need_source() / "data" / "train.csv"
    exported.write_text("".join(sample_csv.splitlines(keepends=True)[:61]))  # 60 rows
    commit_time = int(git(origin.path, "log", "-1", "--format=%ct", sha))
    os.utime(exported, (commit_time, commit_time))

    b.hash_stage(ctx)
    outcome = b.train_stage(ctx)

    blob = git(origin.path, "rev-parse", f"{sha}:data/train.csv")
    assert ctx.data is not None and ctx.data.content_id == f"git:{blob}"
    assert outcome.cache == "miss"
    assert ctx.metrics is not None and ctx.metrics["rows"]["read"] == 240  # the commit's rows
    assert (
        f"writing data/train.csv from the mirror (blob {blob[:12]})"
        in (logs(b.engine, ctx.build.id)["train"])
    )
    # The stored model is the honest one: the next build of that blob gets it.
    ctx2, _, outcome2 = b.train(origin.commit({"README.md": "x\n"}))
    assert outcome2.cache == "hit" and ctx2.metrics is not None
    assert ctx2.metrics["rows"]["read"] == 240


def test_a_forced_build_uses_the_model_it_trained_not_the_stored_one(builds, origin, sample_csv):
    b = builds()
    sha = origin.commit({"data/train.csv": sample_csv})
    ctx, _ = b.hash(sha)
    assert ctx.keys is not None
    key = ctx.keys.model
    b.store.publish("models", key, fake_model(b.settings.home / "m"), {"build_id": 41})

    ctx, _detail, outcome = b.train(sha, force=True)

    assert (outcome.detail or "").startswith(f"trained (forced rebuild), stored as key {key[:12]}")
    assert ctx.model_dir is not None
    trained = (ctx.model_dir / "model.joblib").read_bytes()
    assert trained != b"stored model.joblib"
    entry = b.store.lookup("models", key)
    assert entry is not None and entry.build_id == ctx.build.id  # its own result won
    assert b.store.fetch("models", key, b.settings.home / "check") is not None
    assert (b.settings.home / "check" / "model.joblib").read_bytes() == trained


def test_an_lfs_object_not_matching_its_oid_is_refused(builds, origin, sample_csv):
    b = builds()
    sha, oid = lfs_commit(origin, sample_csv)
    ctx, _ = b.hash(sha)  # clones the mirror
    assert ctx.mirror is not None and ctx.keys is not None
    objects = ctx.mirror / "lfs" / "objects" / oid[:2] / oid[2:4]
    objects.mkdir(parents=True)
    forged = sample_csv.replace("pos", "neg", 5)
    assert len(forged) == len(sample_csv) and forged != sample_csv
    (objects / oid).write_text(forged)  # the right size, other bytes

    with pytest.raises(StageFailed, match=f"does not match its oid sha256:{oid}") as failed:
        b.train(sha)

    assert "refused, nothing is trained on it or stored" in str(failed.value)
    assert b.store.lookup("models", ctx.keys.model) is None
