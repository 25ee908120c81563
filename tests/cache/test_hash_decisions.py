"""The hash stage decides every cache level before training, from content ids that read no
data git already vouches for, and says why each level hit or missed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.cache.harness import DATA, Builds, fake_model
from tests.conftest import REPO_ROOT
from tests.support.gitrepo import git
from trainhook.artifacts import open_store
from worker.hash.statcache import StatCache

LFS_OID = "4d7a2146e5e1ba3e7f1d0a1b5b1a6b5c9e0b1d2c3f4a5b6c7d8e9f0a1b2c3d4e"
POINTER = f"version https://git-lfs.github.com/spec/v1\noid sha256:{LFS_OID}\nsize 123456\n"


def store_model(b: Builds, key: str, build_id: int = 1) -> None:
    b.store.publish(
        "models", key, fake_model(b.settings.home / f"m-{key[:8]}"), {"build_id": build_id}
    )


def test_a_tracked_data_file_is_keyed_by_its_blob_id(builds, origin):
    sha = origin.commit({"data/train.csv": DATA})
    ctx, detail = builds().hash(sha)

    assert ctx.data is not None and ctx.data.source == "git" and ctx.data.bytes_read == 0
    assert ctx.data.content_id == "git:" + git(origin.path, "rev-parse", f"{sha}:data/train.csv")
    assert "(git blob, 0 data bytes read)" in detail


def test_hashing_a_large_tracked_file_reads_none_of_it(builds, origin):
    sha = origin.commit({"data/train.csv": b"text,label\n" + os.urandom(4 << 20).hex().encode()})
    b = builds()
    ctx = b.context(sha)
    from worker.checkout import checkout_stage

    checkout_stage(ctx)
    before = _rchar()
    b.hash_stage(ctx)
    read = _rchar() - before  # this process and its reaped children (git)

    assert ctx.data is not None and ctx.data.source == "git"
    assert read < 1 << 20, f"{read} bytes read while hashing an 8 MiB data file"


def _rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def test_the_decision_imports_neither_nltk_nor_scikit_learn(builds, origin, tmp_path):
    sha = origin.commit({"data/train.csv": DATA})
    settings = builds().settings
    script = (
        "import sys, json\n"
        "from pathlib import Path\n"
        "from worker.hash.keys import decide, Sources\n"
        "from worker.checkout import export\n"
        "from worker.hash.statcache import StatCache\n"
        "from trainhook.artifacts import open_store\n"
        "from trainhook.repos import RepoConfig\n"
        f"src = Path({str(tmp_path / 'src')!r}); src.mkdir()\n"
        f"export(Path({str(origin.path / '.git')!r}), {sha!r}, src)\n"
        "repo = RepoConfig(name='r', clone_url='file:///x', secret_env='S',"
        " data=('data/train.csv',))\n"
        f"d = decide(Path({str(origin.path / '.git')!r}), {sha!r}, src, repo,"
        f" open_store({str(settings.artifacts)!r}), Sources(StatCache(src.parent / 's.db')))\n"
        "print(json.dumps([d.model.result, sorted(m for m in ('nltk', 'sklearn', 'numpy')"
        " if m in sys.modules)]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == '["miss", []]'


def test_a_data_file_rewritten_after_checkout_is_keyed_by_its_content(builds, origin):
    sha = origin.commit({"data/train.csv": DATA})
    b = builds()
    ctx = b.context(sha)
    from worker.checkout import checkout_stage

    checkout_stage(ctx)
    cleaned = DATA + "meh,neg\n"
    (ctx.need_source() / "data" / "train.csv").write_text(cleaned)  # say, by the test stage
    detail = b.hash_stage(ctx).detail or ""

    import blake3

    assert ctx.data is not None and ctx.data.source == "file"
    assert ctx.data.content_id == "blake3:" + blake3.blake3(cleaned.encode()).hexdigest()
    assert "streaming blake3" in detail


def test_a_data_file_produced_at_build_time_is_hashed(builds, origin):
    sha = origin.commit({"app.py": "x = 1\n"})
    b = builds('data = ["data/generated.csv", "data/train.csv"]')
    ctx = b.context(sha)
    from worker.checkout import checkout_stage

    checkout_stage(ctx)
    (ctx.need_source() / "data").mkdir()
    (ctx.need_source() / "data" / "generated.csv").write_text(DATA)
    b.hash_stage(ctx)

    assert ctx.data is not None and ctx.data.path == "data/generated.csv"
    assert ctx.data.source == "file" and ctx.data.content_id.startswith("blake3:")


def test_a_git_lfs_pointer_is_keyed_by_its_lfs_oid(builds, origin):
    sha = origin.commit({"data/train.csv": POINTER})
    ctx, detail = builds().hash(sha)

    assert ctx.data is not None and ctx.data.source == "lfs"
    assert ctx.data.content_id == f"lfs:sha256:{LFS_OID}" and ctx.data.size == 123456
    assert ctx.data.local is None  # the object was never fetched
    assert "Git LFS oid" in detail


def test_changed_data_is_named_with_both_blob_ids(builds, origin):
    b = builds()
    first = origin.commit({"data/train.csv": DATA})
    _ctx1, _ = b.hash(first)
    second = origin.commit({"data/train.csv": DATA + "meh,neg\n"})
    _ctx2, detail = b.hash(second)

    old = git(origin.path, "rev-parse", f"{first}:data/train.csv")[:7]
    new = git(origin.path, "rev-parse", f"{second}:data/train.csv")[:7]
    assert f"model: miss (data/train.csv changed: blob {old}→{new})" in detail


def test_a_push_changing_only_code_hits_every_level_and_says_why(builds, origin):
    b = builds()
    ctx1, detail1 = b.hash(origin.commit({"data/train.csv": DATA, "uv.lock": "v1\n"}))
    assert " · deps: miss (first recorded build of main) · " in detail1
    assert ctx1.keys is not None
    store_model(b, ctx1.keys.model, build_id=ctx1.build.id)

    ctx2, detail2 = b.hash(origin.commit({"README.md": "# docs\n"}))

    n = ctx1.build.id
    assert ctx2.keys == ctx1.keys
    assert f"deps: hit (uv.lock unchanged; stored by build #{n})" in detail2
    assert "nltk: unused (the model is reused)" in detail2
    assert f"model: hit (data/train.csv, params and trainer unchanged; stored by build #{n})" in (
        detail2
    )
    metrics = ctx2.recorder.metrics.cache
    assert metrics.labels(level="deps", result="hit")._value.get() == 1


def test_a_changed_lock_file_misses_the_deps_level_only(builds, origin):
    b = builds()
    ctx1, _ = b.hash(origin.commit({"data/train.csv": DATA, "uv.lock": "v1\n"}))
    assert ctx1.keys is not None
    store_model(b, ctx1.keys.model)
    sha = origin.commit({"uv.lock": "v2\n", "requirements-dev.txt": "pytest\n"})
    _ctx2, detail = b.hash(sha)

    old, new = (git(origin.path, "rev-parse", f"{s}:uv.lock")[:7] for s in (f"{sha}~1", sha))
    assert f"deps: miss (requirements-dev.txt added; uv.lock changed: blob {old}→{new})" in detail
    assert "model: hit" in detail


def test_unchanged_inputs_without_a_stored_model_say_so(builds, origin):
    b = builds()
    ctx1, _ = b.hash(origin.commit({"data/train.csv": DATA}))
    _, detail = b.hash(origin.commit({"README.md": "x\n"}))

    assert f"model: miss (data/train.csv, params and trainer unchanged since #{ctx1.build.id}" in (
        detail
    )
    assert "no stored entry" in detail


def test_changed_training_params_are_named(builds, origin):
    sha = origin.commit({"data/train.csv": DATA})
    builds().hash(sha)
    _, detail = builds('data = ["data/train.csv"]\nparams = { C = 0.5 }').hash(sha)
    assert "model: miss (param C 0.1→0.5)" in detail


def test_force_bypasses_every_level(builds, origin):
    b = builds('data = ["data/train.csv"]\nparams = { stopwords = true }')
    ctx1, _ = b.hash(origin.commit({"data/train.csv": DATA, "uv.lock": "v1\n"}))
    assert ctx1.keys is not None
    store_model(b, ctx1.keys.model)

    ctx, _detail = b.hash(ctx1.build.sha, force=True)

    assert ctx.cache is not None
    assert [(lv.result, lv.why) for lv in ctx.cache.levels] == [("miss", "forced rebuild")] * 3


def test_the_explanation_is_logged_as_json_for_the_dashboard(builds, origin):
    import json

    from tests.worker.conftest import logs

    b = builds()
    ctx, _ = b.hash(origin.commit({"data/train.csv": DATA}))
    line = next(
        x
        for x in logs(b.engine, ctx.build.id)["hash"].splitlines()
        if x.startswith("cache-explain ")
    )
    explained = json.loads(line.removeprefix("cache-explain "))
    assert set(explained) == {"deps", "nltk", "model", "previous_build"}
    assert explained["model"]["result"] == "miss" and explained["model"]["key"] == ctx.keys.model


def test_a_corrupt_stored_model_is_a_miss_with_the_reason(builds, origin):
    b = builds()
    ctx1, _ = b.hash(origin.commit({"data/train.csv": DATA}))
    assert ctx1.keys is not None
    store_model(b, ctx1.keys.model)
    entry = Path(b.settings.artifacts_path) / "models" / ctx1.keys.model
    (entry / "model.joblib").write_text("torn")

    _, detail = b.hash(origin.commit({"README.md": "x\n"}))

    assert "model: miss (stored entry unusable:" in detail and "model.joblib has 4 bytes" in detail


def test_stat_cache_remembers_a_settled_file_and_notices_a_change(tmp_path):
    cache = StatCache(tmp_path / "stat.sqlite", racy_ns=0)
    data = tmp_path / "data.csv"
    data.write_text(DATA)
    first, cached = cache.digest(data)
    assert not cached and cache.hashed_bytes == len(DATA)

    assert StatCache(tmp_path / "stat.sqlite", racy_ns=0).digest(data) == (first, True)

    data.write_text(DATA.replace("love", "like"))  # same size, new content
    changed, cached = cache.digest(data)
    assert not cached and changed != first


def test_stat_cache_does_not_trust_a_file_modified_within_the_racy_window(tmp_path):
    cache = StatCache(tmp_path / "stat.sqlite")  # 2 s window
    data = tmp_path / "data.csv"
    data.write_text(DATA)
    cache.digest(data)
    assert cache.digest(data)[1] is False  # just written: hashed again, not remembered


def test_a_damaged_stat_cache_is_replaced_not_fatal(tmp_path):
    (tmp_path / "stat.sqlite").write_bytes(b"this is not a database" * 100)
    data = tmp_path / "data.csv"
    data.write_text(DATA)
    cache = StatCache(tmp_path / "stat.sqlite", racy_ns=0)
    digest, _ = cache.digest(data)
    assert digest.startswith("blake3:")
    assert cache.digest(data) == (digest, True)


def test_stat_cache_is_shared_by_concurrent_processes(tmp_path):
    files = []
    for i in range(20):
        path = tmp_path / f"f{i}.csv"
        path.write_text(f"{DATA}{i}\n")
        files.append(str(path))
    script = (
        "import sys\nfrom pathlib import Path\nfrom worker.hash.statcache import StatCache\n"
        f"c = StatCache(Path({str(tmp_path / 'stat.sqlite')!r}), racy_ns=0)\n"
        "for _ in range(5):\n"
        "    c.digest_files([Path(p) for p in sys.argv[1:]])\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, *files], cwd=REPO_ROOT) for _ in range(3)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0] * 3
    cache = StatCache(tmp_path / "stat.sqlite", racy_ns=0)
    assert all(cached for _, cached in cache.digest_files([Path(f) for f in files]).values())


def test_an_artifacts_location_in_gcs_holds_the_levels(builds, origin, bucket, gcs_client):
    store = open_store(f"gs://{bucket}/cache", client=gcs_client)
    b = builds(store=store)
    ctx1, _ = b.hash(origin.commit({"data/train.csv": DATA}))
    assert ctx1.keys is not None
    store_model(b, ctx1.keys.model, build_id=ctx1.build.id)
    _, detail = b.hash(origin.commit({"README.md": "x\n"}))
    assert "model: hit" in detail and f"stored by build #{ctx1.build.id}" in detail


def test_gs_data_is_keyed_by_the_objects_md5_and_falls_through_when_absent(
    builds, origin, bucket, gcs_client
):
    import hashlib

    gcs_client.bucket(bucket).blob("tweets/v3.csv").upload_from_string(DATA)
    sha = origin.commit({"data/train.csv": DATA})
    extra = f'data = ["gs://{bucket}/missing.csv", "gs://{bucket}/tweets/v3.csv", "data/train.csv"]'
    ctx, detail = builds(extra, gcs=gcs_client).hash(sha)

    assert ctx.data is not None and ctx.data.source == "gs" and ctx.data.local is None
    assert ctx.data.path == f"gs://{bucket}/tweets/v3.csv"
    assert ctx.data.content_id == "gs:md5:" + hashlib.md5(DATA.encode()).hexdigest()
    assert "object metadata, 0 data bytes read" in detail

    gcs_client.bucket(bucket).blob("tweets/v3.csv").upload_from_string(DATA + "meh,neg\n")
    ctx2, detail2 = builds(extra, gcs=gcs_client).hash(sha)
    assert ctx2.keys is not None and ctx.keys is not None and ctx2.keys.model != ctx.keys.model
    assert f"gs://{bucket}/tweets/v3.csv changed: md5" in detail2


def test_gitattributes_above_the_data_file_are_part_of_its_content_id(builds, origin):
    b = builds()
    plain, _ = b.hash(origin.commit({"data/train.csv": DATA}))
    attributed, _ = b.hash(origin.commit({"data/.gitattributes": "*.csv eol=crlf\n"}))
    other, _ = b.hash(origin.commit({"data/.gitattributes": "*.csv eol=lf\n"}))

    assert plain.data and attributed.data and other.data
    blob = plain.data.content_id
    assert blob == "git:" + git(origin.path, "rev-parse", "HEAD:data/train.csv")
    assert attributed.data.content_id.startswith(blob + "@")
    assert len({blob, attributed.data.content_id, other.data.content_id}) == 3


def test_the_dashboard_reads_the_levels_and_the_data_file_from_the_detail(builds, origin):
    from service.details import cache_levels, stage_facts

    b = builds('data = ["datasets/v3.csv"]')
    ctx1, _ = b.hash(origin.commit({"datasets/v3.csv": DATA}))
    assert ctx1.keys is not None
    store_model(b, ctx1.keys.model)
    _, detail = b.hash(origin.commit({"README.md": "x\n"}))

    stage = {"name": "hash", "detail": detail, "cache": None}
    assert cache_levels({"stages": [stage]}) == {"deps": "hit", "model": "hit"}
    assert ("data file", "datasets/v3.csv") in [(f.label, f.value) for f in stage_facts(stage)]
