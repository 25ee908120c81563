"""The hash stage decides every cache level before training, from content ids read from the
mirror's object store (never the export the test stage ran in), in keys that belong to one
repository or cache group, and says why each level hit or missed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cache.harness import DATA, Builds, fake_model
from tests.conftest import REPO_ROOT
from tests.support.gitrepo import GitRepo, git
from trainhook.artifacts import open_store
from worker.checkout import checkout_stage
from worker.context import BuildContext
from worker.hash.keys import Sources, choose_data
from worker.stage import StageFailed

LFS_OID = "4d7a2146e5e1ba3e7f1d0a1b5b1a6b5c9e0b1d2c3f4a5b6c7d8e9f0a1b2c3d4e"
POINTER = f"version https://git-lfs.github.com/spec/v1\noid sha256:{LFS_OID}\nsize 123456\n"


def store_model(b: Builds, key: str, build_id: int = 1) -> None:
    b.store.publish(
        "models", key, fake_model(b.settings.home / f"m-{key[:8]}"), {"build_id": build_id}
    )


def test_a_tracked_data_file_is_keyed_by_its_blob_id(builds, origin, tmp_path):
    sha = origin.commit({"data/train.csv": DATA})
    ctx, detail = builds().hash(sha)

    assert ctx.data is not None and ctx.data.source == "git"
    assert ctx.data.content_id == "git:" + git(origin.path, "rev-parse", f"{sha}:data/train.csv")
    assert "(git blob, 0 data bytes read)" in detail
    # The train stage writes that blob out of the mirror.
    from worker.training import data_file

    written = data_file(ctx, tmp_path / "scratch")
    assert written is not None and written.read_text() == DATA


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
        "from trainhook.artifacts import open_store\n"
        "from trainhook.repos import RepoConfig\n"
        "repo = RepoConfig(name='r', clone_url='file:///x', secret_env='S',"
        " data=('data/train.csv',))\n"
        f"d = decide(Path({str(origin.path / '.git')!r}), {sha!r}, repo,"
        f" open_store({str(settings.artifacts)!r}), Sources())\n"
        "print(json.dumps([d.model.result, sorted(m for m in ('nltk', 'sklearn', 'numpy')"
        " if m in sys.modules)]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == '["miss", []]'


def test_a_data_file_rewritten_after_checkout_keeps_its_blob_id(builds, origin):
    sha = origin.commit({"data/train.csv": DATA})
    b = builds()
    ctx = b.context(sha)
    checkout_stage(ctx)
    (ctx.need_source() / "data" / "train.csv").write_text(DATA + "meh,neg\n")  # by a test
    detail = b.hash_stage(ctx).detail or ""

    assert ctx.data is not None and ctx.data.source == "git"
    assert ctx.data.content_id == "git:" + git(origin.path, "rev-parse", f"{sha}:data/train.csv")
    assert "(git blob, 0 data bytes read)" in detail


def test_a_touched_data_file_keeps_its_blob_id_and_hits_the_cache(builds, origin):
    b = builds()
    first, _ = b.hash(origin.commit({"data/train.csv": DATA}))
    assert first.keys is not None
    store_model(b, first.keys.model, build_id=first.build.id)
    ctx = b.context(origin.commit({"README.md": "docs\n"}))
    checkout_stage(ctx)
    data = ctx.need_source() / "data" / "train.csv"
    data.write_bytes(data.read_bytes())  # the same bytes, a new mtime (a copy, a touch)
    os.utime(data)

    detail = b.hash_stage(ctx).detail or ""

    assert ctx.data is not None and ctx.data.content_id == first.data.content_id  # type: ignore[union-attr]
    assert ctx.keys is not None and ctx.keys.model == first.keys.model
    assert "model: hit" in detail and "(git blob, 0 data bytes read)" in detail


def test_the_same_bytes_moved_within_the_repository_keep_their_id_and_hit(builds, origin):
    b = builds('data = ["data/prod.csv", "data/train.csv"]')
    first, _ = b.hash(origin.commit({"data/train.csv": DATA}))
    assert first.keys is not None and first.data is not None
    store_model(b, first.keys.model, build_id=first.build.id)
    git(origin.path, "mv", "data/train.csv", "data/prod.csv")
    moved, detail = b.hash(origin.commit())

    assert moved.data is not None and moved.data.path == "data/prod.csv"
    assert moved.data.content_id == first.data.content_id
    assert moved.keys is not None and moved.keys.model == first.keys.model
    assert "model: hit (training file data/train.csv→data/prod.csv; key " in detail


def test_a_data_file_not_in_the_commit_is_never_chosen(builds, origin):
    sha = origin.commit({"data/train.csv": DATA})
    b = builds('data = ["data/generated.csv", "data/train.csv"]')
    ctx = b.context(sha)
    checkout_stage(ctx)
    (ctx.need_source() / "data" / "generated.csv").write_text("planted,pos\n")  # by a test
    (ctx.need_source() / "data" / "train.csv").unlink()
    b.hash_stage(ctx)

    assert ctx.data is not None and ctx.data.path == "data/train.csv"
    assert ctx.data.source == "git" and ctx.data.content_id.startswith("git:")


def test_a_git_lfs_pointer_is_keyed_by_its_lfs_oid(builds, origin):
    sha = origin.commit({"data/train.csv": POINTER})
    ctx, detail = builds().hash(sha)

    assert ctx.data is not None and ctx.data.source == "lfs"
    assert ctx.data.content_id == f"lfs:sha256:{LFS_OID}" and ctx.data.size == 123456
    assert ctx.data.local is None  # the object was never fetched
    assert detail.startswith(
        f"data data/train.csv lfs:sha256:{LFS_OID[:12]} "
        "(Git LFS oid from the pointer, 0 data bytes read) · "
    )


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
    # The deps level this build missed is recorded by it, and the dashboard says so.
    assert explained["deps"]["result"] == "miss" and explained["deps"]["build"] == ctx.build.id


def test_a_corrupt_stored_model_is_a_miss_with_the_reason(builds, origin):
    b = builds()
    ctx1, _ = b.hash(origin.commit({"data/train.csv": DATA}))
    assert ctx1.keys is not None
    store_model(b, ctx1.keys.model)
    entry = Path(b.settings.artifacts_path) / "models" / ctx1.keys.model
    (entry / "model.joblib").write_text("torn")

    _, detail = b.hash(origin.commit({"README.md": "x\n"}))

    assert "model: miss (stored entry unusable:" in detail and "model.joblib has 4 bytes" in detail


def test_an_artifacts_location_in_gcs_holds_the_levels(builds, origin, bucket, gcs_client):
    store = open_store(f"gs://{bucket}/cache", client=gcs_client)
    b = builds(store=store)
    ctx1, _ = b.hash(origin.commit({"data/train.csv": DATA}))
    assert ctx1.keys is not None
    store_model(b, ctx1.keys.model, build_id=ctx1.build.id)
    _, detail = b.hash(origin.commit({"README.md": "x\n"}))
    assert "model: hit" in detail and f"stored by build #{ctx1.build.id}" in detail


def test_gs_data_is_keyed_by_the_objects_md5_and_falls_through_when_absent(
    builds, origin, bucket, gcs_client, tmp_path
):
    import hashlib

    gcs_client.bucket(bucket).blob("tweets/v3.csv").upload_from_string(DATA)
    sha = origin.commit({"data/train.csv": DATA})
    extra = f'data = ["gs://{bucket}/missing.csv", "gs://{bucket}/tweets/v3.csv", "data/train.csv"]'
    ctx, detail = builds(extra, gcs=gcs_client).hash(sha)

    assert ctx.data is not None and ctx.data.source == "gs" and ctx.data.local is None
    assert ctx.data.path == f"gs://{bucket}/tweets/v3.csv"
    md5 = hashlib.md5(DATA.encode()).hexdigest()
    assert ctx.data.content_id == "gs:md5:" + md5
    assert detail.startswith(
        f"data gs://{bucket}/tweets/v3.csv gs:md5:{md5[:12]} (object metadata, 0 data bytes read)"
    )
    # The train stage downloads the object the decision chose.
    from worker.training import data_file

    written = data_file(ctx, tmp_path / "scratch")
    assert written is not None and written.read_text() == DATA

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


def test_two_repositories_with_the_same_data_never_share_a_model(builds, origin, tmp_path):
    other = GitRepo(tmp_path / "other")
    a = builds()
    b = builds(name="someone-else/copycat", clone_url=other.url)
    ctx_a, _ = a.hash(origin.commit({"data/train.csv": DATA, "uv.lock": "v1\n"}))
    assert ctx_a.keys is not None and ctx_a.data is not None
    store_model(a, ctx_a.keys.model, build_id=ctx_a.build.id)

    ctx_b, detail = b.hash(other.commit({"data/train.csv": DATA, "uv.lock": "v1\n"}))

    assert ctx_b.data is not None and ctx_b.data.content_id == ctx_a.data.content_id
    assert ctx_b.keys is not None
    assert {ctx_b.keys.deps, ctx_b.keys.nltk, ctx_b.keys.model}.isdisjoint(
        {ctx_a.keys.deps, ctx_a.keys.nltk, ctx_a.keys.model}
    )
    assert "model: miss" in detail and "deps: miss" in detail


def test_repositories_in_one_cache_group_share_models(builds, origin, tmp_path):
    other = GitRepo(tmp_path / "other")
    group = 'data = ["data/train.csv"]\ncache_group = "team-nlp"'
    a = builds(group)
    b = builds(group, name="octo-org/sibling", clone_url=other.url)
    ctx_a, _ = a.hash(origin.commit({"data/train.csv": DATA}))
    assert ctx_a.keys is not None
    store_model(a, ctx_a.keys.model, build_id=ctx_a.build.id)

    ctx_b, detail = b.hash(other.commit({"data/train.csv": DATA}))

    assert ctx_b.keys == ctx_a.keys
    assert f"model: hit (key {ctx_a.keys.model[:12]} stored by build #{ctx_a.build.id})" in detail


def test_joining_a_cache_group_is_named_as_the_reason_for_the_miss(builds, origin):
    sha = origin.commit({"data/train.csv": DATA})
    builds().hash(sha)
    _, detail = builds('data = ["data/train.csv"]\ncache_group = "team-nlp"').hash(sha)

    assert (
        "model: miss (cache scope repository github:octo-org/social-score-api "
        f"({origin.url})→cache group team-nlp)"
    ) in detail


@pytest.mark.parametrize("group", ["Team", "", "-x", "a b", "x" * 64])
def test_a_cache_group_outside_the_grammar_is_refused_at_start(make_settings, group):
    from trainhook.errors import ConfigError

    with pytest.raises(ConfigError, match="key 'cache_group'"):
        make_settings(extra=f'cache_group = "{group}"')


def test_an_lfs_pointer_copied_from_another_repository_does_not_get_its_model(
    builds, origin, tmp_path
):
    victim = builds()
    ctx_a, _ = victim.hash(origin.commit({"data/train.csv": POINTER}))
    assert ctx_a.keys is not None and ctx_a.data is not None
    store_model(victim, ctx_a.keys.model, build_id=ctx_a.build.id)
    # The oid is public: the victim's hash log shows it. Commit the same pointer elsewhere.
    attacker_repo = GitRepo(tmp_path / "attacker")
    attacker = builds(name="mallory/steal", clone_url=attacker_repo.url)
    ctx_b, detail = attacker.hash(attacker_repo.commit({"data/train.csv": POINTER}))

    assert ctx_b.data is not None and ctx_b.data.content_id == ctx_a.data.content_id
    assert ctx_b.keys is not None and ctx_b.keys.model != ctx_a.keys.model
    assert "model: miss" in detail


def test_the_data_choice_follows_symlinks_in_the_tree_not_the_export(builds, origin):
    (origin.path / "data").mkdir()
    os.symlink("../datasets/v3.csv", origin.path / "data" / "train.csv")
    sha = origin.commit({"datasets/v3.csv": DATA})
    b = builds()
    ctx = b.context(sha)
    checkout_stage(ctx)
    (ctx.need_source() / "data" / "train.csv").unlink()  # the export no longer has it
    detail = b.hash_stage(ctx).detail or ""

    assert ctx.data is not None and ctx.data.path == "datasets/v3.csv"
    assert ctx.data.content_id == "git:" + git(origin.path, "rev-parse", f"{sha}:datasets/v3.csv")
    assert "(via data/train.csv)" in detail
    # The hash log opens with the same line, the configured name included.
    from tests.worker.conftest import logs

    assert logs(b.engine, ctx.build.id)["hash"].splitlines()[0] == detail.split(" · ")[0]


@pytest.mark.parametrize(
    "target,message",
    [
        ("../../outside.csv", "is a symlink leaving the checkout"),
        ("/etc/passwd", "is a symlink leaving the checkout"),
        ("missing.csv", "is a dangling symlink"),
        ("train.csv", "is a symlink loop"),
        ("../datasets", "is not a regular file"),
    ],
)
def test_a_data_path_that_cannot_be_data_fails_the_stage_naming_it(origin, target, message):
    # Asked of the tree directly: the checkout refuses some of these trees on its own.
    (origin.path / "data").mkdir()
    os.symlink(target, origin.path / "data" / "train.csv")
    sha = origin.commit({"datasets/v3.csv": DATA})
    with pytest.raises(StageFailed, match=f"'data/train.csv' {message}"):
        choose_data(origin.path / ".git", sha, ("data/train.csv",), Sources())


def test_the_data_line_names_the_file_and_the_first_12_characters_of_its_blob_id(builds, origin):
    sha = origin.commit({"data/train.csv": DATA})
    _ctx, detail = builds().hash(sha)

    blob = git(origin.path, "rev-parse", f"{sha}:data/train.csv")
    assert detail.startswith(
        f"data data/train.csv git:{blob[:12]} (git blob, 0 data bytes read) · "
    )


def test_the_content_id_of_data_under_gitattributes_is_pinned(builds, origin):
    # The id is part of the model key: a change of its form retrains every such model once.
    import hashlib

    sha = origin.commit({"data/train.csv": DATA, "data/.gitattributes": "*.csv eol=lf\n"})
    ctx, _ = builds().hash(sha)

    blob = git(origin.path, "rev-parse", f"{sha}:data/train.csv")
    attributes = git(origin.path, "rev-parse", f"{sha}:data/.gitattributes")
    digest = hashlib.sha256(f'["{attributes}"]'.encode()).hexdigest()[:16]
    assert ctx.data is not None and ctx.data.content_id == f"git:{blob}@{digest}"


def test_the_deps_level_keys_the_lock_pyproject_and_requirements_files_only(builds, origin):
    b = builds()
    files = {
        "data/train.csv": DATA,
        "uv.lock": "v1\n",
        "pyproject.toml": "[project]\n",
        "requirements-dev.txt": "pytest\n",
        "notes.txt": "one\n",
        "requirements.in": "sklearn\n",
        "requirements-ci.txt/README": "a folder, not a requirements file\n",
    }
    first, _ = b.hash(origin.commit(files))
    assert first.keys is not None
    store_model(b, first.keys.model, build_id=first.build.id)
    changes = {
        "notes.txt": "two\n",
        "requirements.in": "nltk\n",
        "requirements-ci.txt/README": "changed\n",
    }
    other, detail = b.hash(origin.commit(changes))

    n = first.build.id
    assert other.keys is not None and other.keys.deps == first.keys.deps
    assert (
        f"deps: hit (pyproject.toml, requirements-dev.txt, uv.lock unchanged; stored by build #{n})"
    ) in detail
    sha = origin.commit({"pyproject.toml": "[project]\nname = 'x'\n"})
    changed, detail = b.hash(sha)

    assert changed.keys is not None and changed.keys.deps != first.keys.deps
    old, new = (git(origin.path, "rev-parse", f"{s}:pyproject.toml")[:7] for s in (f"{sha}~1", sha))
    assert f"deps: miss (pyproject.toml changed: blob {old}→{new})" in detail


def test_default_params_read_no_nltk_data_so_the_nltk_level_is_unused(builds, origin):
    _ctx, detail = builds().hash(origin.commit({"data/train.csv": DATA}))

    assert "nltk: unused (these training params read no NLTK data)" in detail


def test_deciding_without_force_reuses_a_stored_model(builds, origin):
    from trainhook.repos import RepoConfig
    from worker.hash.keys import decide

    b = builds()
    ctx, _ = b.hash(origin.commit({"data/train.csv": DATA}))
    assert ctx.keys is not None
    store_model(b, ctx.keys.model, build_id=ctx.build.id)

    repo: RepoConfig = b.settings.repos[0]
    decision = decide(origin.path / ".git", ctx.build.sha, repo, b.store, Sources())

    assert decision.keys == ctx.keys and decision.model.result == "hit"


def test_a_record_from_before_key_version_2_names_the_version_as_the_reason_to_retrain(
    builds, origin
):
    import json

    import sqlalchemy as sa

    from trainhook.models import stage_logs
    from worker.hash.decision import INPUTS_MARK

    b = builds()
    first, _ = b.hash(origin.commit({"data/train.csv": DATA}))
    # Rewrite its record as trainhook wrote it before keys held the scope: neither field.
    query = sa.select(stage_logs.c.id, stage_logs.c.text).where(
        stage_logs.c.build_id == first.build.id, stage_logs.c.stage == "hash"
    )
    with b.engine.begin() as conn:
        for row_id, text in conn.execute(query).all():
            lines = []
            for line in text.splitlines(keepends=True):
                if line.startswith(INPUTS_MARK):
                    inputs = json.loads(line.removeprefix(INPUTS_MARK))
                    for level in ("deps", "nltk", "model"):
                        del inputs[level]["key_version"], inputs[level]["scope"]
                    line = INPUTS_MARK + json.dumps(inputs) + "\n"
                lines.append(line)
            update = stage_logs.update().where(stage_logs.c.id == row_id)
            conn.execute(update.values(text="".join(lines)))

    _, detail = b.hash(origin.commit({"README.md": "x\n"}))

    assert "model: miss (cache key version 1→2)" in detail


def test_the_recorded_inputs_keep_the_format_later_builds_read(builds, origin):
    # The next build (maybe of a later trainhook) explains its hits and misses against this
    # record, read back from the hash log: a renamed field there is a wrong explanation.
    import json

    import trainer
    from tests.worker.conftest import logs
    from trainer.params import TrainParams
    from worker.hash.decision import INPUTS_MARK
    from worker.hash.keys import installed_nltk_version

    b = builds()
    sha = origin.commit({"data/train.csv": DATA, "uv.lock": "v1\n"})
    ctx, _ = b.hash(sha)

    line = next(
        x for x in logs(b.engine, ctx.build.id)["hash"].splitlines() if x.startswith(INPUTS_MARK)
    )
    assert ctx.keys is not None
    scope = {"repo": "github:octo-org/social-score-api", "clone_url": origin.url}
    common = {"key_version": 2, "scope": scope}
    blob = git(origin.path, "rev-parse", f"{sha}:data/train.csv")
    assert json.loads(line.removeprefix(INPUTS_MARK)) == {
        "v": 1,
        "deps": {
            "key": ctx.keys.deps,
            **common,
            "files": {"uv.lock": git(origin.path, "rev-parse", f"{sha}:uv.lock")},
        },
        "nltk": {
            "key": ctx.keys.nltk,
            **common,
            "nltk_version": installed_nltk_version(),
            "packages": ["stopwords"],
            "needed": [],
        },
        "model": {
            "key": ctx.keys.model,
            **common,
            "trainer_version": trainer.TRAINER_VERSION,
            "params": TrainParams().to_dict(),
            "data": {"path": "data/train.csv", "id": f"git:{blob}", "configured": "data/train.csv"},
        },
    }


def test_the_deps_entry_holds_its_files_and_the_build_that_first_used_them(
    builds, origin, tmp_path
):
    # The key a builder's image layers and venvs are named by: an operator finds there
    # which lock files it stands for and which build of which repository made it.
    import json

    b = builds()
    sha = origin.commit({"data/train.csv": DATA, "uv.lock": "v1\n"})
    ctx, _ = b.hash(sha)
    assert ctx.keys is not None and ctx.cache is not None

    entry = b.store.fetch("deps", ctx.keys.deps, tmp_path / "deps")

    assert entry is not None and set(entry.files) == {"deps.json"}
    meta = {"build_id": ctx.build.id, "repo": "octo-org/social-score-api", "sha": sha}
    assert {k: entry.meta.get(k) for k in meta} == meta
    recorded = (tmp_path / "deps" / "deps.json").read_text(encoding="utf-8")
    assert recorded.endswith("}\n") and json.loads(recorded) == ctx.cache.inputs["deps"]
    assert json.loads(recorded)["files"] == {
        "uv.lock": git(origin.path, "rev-parse", f"{sha}:uv.lock")
    }


def deployed_and_then(
    b: Builds, sha: str, trigger: str, force: bool = False, then: str | None = None
) -> tuple[int, BuildContext, str]:
    """Hash `sha` in a build whose deploy succeeds, then hash `then` (default: `sha` again)
    in a `trigger` build: (the deployed build, the second build's context and detail)."""
    from tests.worker.conftest import context_for
    from trainhook.builds import BuildSpec, add_event, create_build

    first, _ = b.hash(sha)
    with b.engine.begin() as conn:
        add_event(conn, first.build.id, "deploy", "succeeded", detail="released")
        spec = BuildSpec(
            "github", first.build.repo, "refs/heads/main", then or sha, trigger=trigger, force=force
        )
        second = create_build(conn, spec)
    ctx = context_for(b.settings, b.engine, second)
    checkout_stage(ctx)
    return first.build.id, ctx, b.hash_stage(ctx).detail or ""


@pytest.mark.parametrize(
    "trigger,extra",
    [("schedule", ""), ("data", ""), ("data", 'schedule = "0 3 * * *"\nschedule_force = true')],
)
def test_a_scheduled_or_data_build_of_the_deployed_model_ends_superseded_after_hashing(
    builds, origin, trigger, extra
):
    from tests.worker.conftest import build_view, stage_map

    b = builds('data = ["data/train.csv"]\n' + extra)
    deployed, ctx, detail = deployed_and_then(b, origin.commit({"data/train.csv": DATA}), trigger)

    reason = f"model key unchanged since build #{deployed}"
    assert detail.endswith(f" · {reason}")
    view = build_view(b.engine, ctx.build.id)
    assert (view["status"], view["error"]) == ("superseded", reason)
    stages = stage_map(b.engine, ctx.build.id)
    for name in ("train", "build", "push", "deploy", "vertex"):
        assert (stages[name]["status"], stages[name]["detail"]) == ("skipped", reason), name
    assert "skipped" not in {stages[name]["status"] for name in ("checkout", "test", "hash")}


@pytest.mark.parametrize(
    "trigger,force,extra",
    [
        ("push", False, ""),
        ("rebuild", False, ""),
        ("schedule", True, ""),
        ("data", True, ""),
        ("schedule", False, 'schedule = "0 3 * * *"\nschedule_force = true'),
    ],
)
def test_a_push_a_forced_build_or_a_schedule_told_to_force_still_trains_the_same_model(
    builds, origin, trigger, force, extra
):
    from tests.worker.conftest import build_view

    b = builds('data = ["data/train.csv"]\n' + extra)
    sha = origin.commit({"data/train.csv": DATA})
    code_only = origin.commit({"app.py": "v = 2\n"})  # a push of `sha` again would be stale
    _, ctx, detail = deployed_and_then(b, sha, trigger, force, then=code_only)

    assert "model key unchanged" not in detail
    assert build_view(b.engine, ctx.build.id)["status"] != "superseded"


def test_a_scheduled_build_of_new_data_goes_on(builds, origin):
    from tests.worker.conftest import build_view

    b = builds()
    old = origin.commit({"data/train.csv": DATA})
    new = origin.commit({"data/train.csv": DATA + "meh,neg\n"})
    _, ctx, detail = deployed_and_then(b, old, "schedule", then=new)

    assert "model key unchanged" not in detail
    assert build_view(b.engine, ctx.build.id)["status"] != "superseded"


def test_a_build_removing_stopwords_is_handed_the_nltk_packages_training_reads(builds, origin):
    from trainer.nltkdata import NLTK_PACKAGES

    b = builds('data = ["data/train.csv"]\nparams = { stopwords = true }')
    ctx, detail = b.hash(origin.commit({"data/train.csv": DATA}))

    assert ctx.cache is not None and ctx.cache.nltk_packages == tuple(NLTK_PACKAGES)
    assert "nltk: miss" in detail


def test_the_hash_log_says_how_long_the_decision_took(builds, origin):
    from tests.worker.conftest import logs

    b = builds()
    ctx, _ = b.hash(origin.commit({"data/train.csv": DATA}))

    (line,) = [x for x in logs(b.engine, ctx.build.id)["hash"].splitlines() if "decided in" in x]
    assert line.startswith("decided in ") and line.endswith(" ms")
    # It runs git once: more than nothing, well under a minute.
    assert 0 < float(line.removeprefix("decided in ").removesuffix(" ms")) < 60_000


def test_a_forced_build_records_the_deps_entry_as_its_own(builds, origin, tmp_path):
    b = builds()
    sha = origin.commit({"data/train.csv": DATA, "uv.lock": "v1\n"})
    first, _ = b.hash(sha)
    forced, _ = b.hash(sha, force=True)

    assert forced.keys is not None and forced.keys.deps == first.keys.deps  # type: ignore[union-attr]
    entry = b.store.lookup("deps", forced.keys.deps)
    assert entry is not None and entry.build_id == forced.build.id


def test_a_store_that_cannot_record_the_deps_entry_does_not_fail_the_build(builds, origin, caplog):
    import logging

    b = builds()

    def refuse(*args, **kwargs):
        raise OSError("disk full")

    b.store.publish = refuse  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="worker.hash.keys"):
        ctx, detail = b.hash(origin.commit({"data/train.csv": DATA}))

    assert ctx.keys is not None and ctx.cache is not None and "deps: miss" in detail
    assert ctx.cache.deps.entry is None
    assert f"could not record deps key {ctx.keys.deps[:12]}: disk full" in caplog.messages


def test_an_lfs_object_fetched_into_the_mirror_is_what_the_train_stage_reads(
    builds, origin, tmp_path
):
    import hashlib

    from worker.training import data_file

    content = DATA + "meh,neg\n"
    oid = hashlib.sha256(content.encode()).hexdigest()
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(content)}\n"
    b = builds()
    sha = origin.commit({"data/train.csv": pointer})
    first, _ = b.hash(sha)  # clones the mirror
    assert first.mirror is not None
    objects = first.mirror / "lfs" / "objects" / oid[:2] / oid[2:4]
    objects.mkdir(parents=True)
    (objects / oid).write_text(content)  # what `git lfs fetch` leaves in a bare mirror

    ctx, _ = b.hash(sha)

    assert ctx.data is not None and ctx.data.source == "lfs" and ctx.data.local is not None
    written = data_file(ctx, tmp_path / "scratch")
    assert written is not None and written.read_text() == content


def test_gs_data_without_a_client_given_is_read_with_one_made_once_for_every_build(
    builds, origin, bucket, gcs_client, monkeypatch
):
    import worker.hash.keys
    from trainhook.gcs import make_gcs_client

    made = []

    def counted():
        made.append(make_gcs_client())
        return made[-1]

    monkeypatch.setattr(worker.hash.keys, "make_gcs_client", counted)
    gcs_client.bucket(bucket).blob("v3.csv").upload_from_string(DATA)
    b = builds(f'data = ["gs://{bucket}/v3.csv"]')  # a local store: no client of its own
    first, _ = b.hash(origin.commit({"app.py": "v = 1\n"}))
    second, _ = b.hash(origin.commit({"app.py": "v = 2\n"}))

    assert first.data is not None and second.data is not None
    assert first.data.source == second.data.source == "gs"
    assert len(made) == 1


def test_hashing_before_the_checkout_fails_saying_so(builds, origin):
    b = builds()
    ctx = b.context(origin.commit({"data/train.csv": DATA}))

    with pytest.raises(RuntimeError, match=r"^no mirror: the checkout stage has not run$"):
        b.hash_stage(ctx)


@pytest.mark.parametrize("given", ["client", "store"])
def test_gs_data_is_read_with_the_client_given_or_the_stores_and_no_new_one(
    builds, origin, bucket, gcs_client, monkeypatch, given
):
    import worker.hash.keys

    made = []
    monkeypatch.setattr(worker.hash.keys, "make_gcs_client", lambda: made.append(1))
    gcs_client.bucket(bucket).blob("v3.csv").upload_from_string(DATA)
    extra = f'data = ["gs://{bucket}/v3.csv"]'
    if given == "client":
        b = builds(extra, gcs=gcs_client)
    else:
        b = builds(extra, store=open_store(f"gs://{bucket}/cache", client=gcs_client))
    ctx, _ = b.hash(origin.commit({"app.py": "v = 1\n"}))

    assert ctx.data is not None and ctx.data.source == "gs" and made == []
