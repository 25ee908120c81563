"""The train stage: restore the stored model for this key, or train one in a child process
and store it; then the quality gate against the model currently deployed.

The trainer reads a copy of the data written from where its content id came from (the
mirror's object store, its LFS store, or the keyed generation of a gs:// object), each byte
checked against that id on the way, and never the export the test stage ran in; it runs in
the build's own workspace, not in the checkout. So the bytes a model is trained on are
exactly those its key names, whatever repository code did to the export. With the sandbox
(the default) repository code cannot reach the mirror, the store or this workspace at all.
A repository with `sandbox = false` runs its tests as the worker's own user: a test that
rewrites its data file (and restores its mtime) still changes neither the key nor the
bytes trained on, and a damaged or rewritten object in the mirror is refused by the check,
but such code could write the artifact store or the database directly: only the sandbox
keeps a hostile repository out of them."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trainer
from trainer.gate import decide
from trainhook.artifacts import Entry
from trainhook.gcs import make_gcs_client
from trainhook.models import utcnow
from trainhook.trainresults import record_train_result
from worker.commands import child_env, run_command
from worker.context import BuildContext
from worker.hash.gcsobjects import download_object
from worker.hash.gittree import DataRefused, copy_lfs_object, write_blob
from worker.nltkcache import prepare_nltk
from worker.stage import Outcome, StageFailed
from worker.testcommand import secret_names
from worker.workspace import Workspace

log = logging.getLogger(__name__)

DATA_ERROR_EXIT = 2  # the trainer's exit status for bad data (contract of `python -m trainer`)
MODEL_KIND = "models"

# Given the build context, the metrics.json of the model deployed now (None: nothing is).
DeployedMetrics = Callable[[BuildContext], "dict[str, Any] | None"]


def trainer_argv(
    ctx: BuildContext, data: Path | None, out: str, nltk: Path | None, empty: Path | None = None
) -> list[str]:
    """`python -m trainer train …` for this build. `-P` keeps modules in the working
    directory (say, a `trainer/` folder) from shadowing the real trainer. Without data
    (no configured file is in the commit) the trainer is pointed at `empty`, an empty
    folder, so that it generates its sample: never at the checkout, where a test could have
    planted a file the key does not name."""
    assert ctx.data is not None
    argv = [sys.executable, "-P", "-m", "trainer", "train"]
    if data is None:
        if empty is None:
            raise ValueError("training without data needs an empty folder")
        argv += [str(empty), "--data-candidates", "-"]
    else:
        argv.append(str(data))
    argv += ["--out", out, "--params", json.dumps(ctx.repo.train_params, sort_keys=True)]
    if nltk is not None:
        argv += ["--nltk-data", str(nltk)]
        if ctx.settings.nltk_index:
            argv += ["--nltk-index", ctx.settings.nltk_index]
    return argv


def data_file(ctx: BuildContext, scratch: Path) -> Path | None:
    """The data file to train on, written into `scratch/data` from where its content id
    came from and checked against that id (see the module's docstring), or None when the
    trainer generates its sample. Fails the stage for data that is not what its id names."""
    data = ctx.data
    assert data is not None
    if data.path is None:
        return None
    name = data.path.rsplit("/", 1)[-1] or "data.csv"
    (scratch / "data").mkdir(parents=True, exist_ok=True)
    dest = scratch / "data" / name
    if data.source == "git" and data.blob is not None:
        if ctx.mirror is None:
            raise RuntimeError("no mirror: the checkout stage has not run")
        ctx.log("train", f"writing {data.path} from the mirror (blob {data.blob[:12]})\n")
        try:
            write_blob(ctx.mirror, data.blob, dest)
        except DataRefused as exc:
            raise StageFailed(f"{data.path}: {exc}") from None
        return dest
    if data.source == "lfs" and data.local is not None:
        try:
            copy_lfs_object(data.local, data.pointer, dest, data.path)
        except DataRefused as exc:
            raise StageFailed(str(exc)) from None
        return dest
    if data.source == "gs":
        ctx.log("train", f"downloading {data.path} (generation {data.remote.generation})\n")
        client = getattr(ctx.cache.store, "client", None) if ctx.cache else None
        if client is None:
            client = make_gcs_client()
        from google.api_core.exceptions import NotFound

        try:
            return download_object(client, data.remote, dest)
        except NotFound:
            raise StageFailed(
                f"{data.path} changed after the cache decision: generation "
                f"{data.remote.generation} is gone (overwritten in a bucket without "
                "versioning); rebuild to train on the current object"
            ) from None
    if data.source == "lfs":
        raise StageFailed(
            f"{data.path} is a Git LFS pointer ({data.content_id}, {data.size} bytes) and the "
            "LFS object is not available to the worker (an export holds pointers only; the "
            "mirror's lfs/objects does not have it), and no model is stored for this data: "
            "fetch the object into the mirror (git lfs fetch) or commit the data itself"
        )
    raise StageFailed(f"data {data.path} is not available to the worker")


def run_trainer(ctx: BuildContext, scratch: Path, nltk: Path | None) -> Path:
    """Train into `scratch/model` and return it. The trainer runs in `scratch`, which only
    this build writes."""
    out = scratch / "model"
    empty = scratch / "no-data"
    empty.mkdir(exist_ok=True)
    argv = trainer_argv(ctx, data_file(ctx, scratch), str(out), nltk, empty)
    ctx.log("train", "$ python -m trainer " + " ".join(argv[4:]) + "\n")
    result = run_command(
        argv,
        cwd=scratch,
        env=child_env(secret_names(ctx)),
        timeout=ctx.settings.train_timeout,
        on_output=lambda text: ctx.log("train", text),
    )
    if result.timed_out:
        raise StageFailed(
            f"training timed out after {ctx.settings.train_timeout:g}s (killed)\n"
            + result.last_lines(5)
        )
    if result.returncode == DATA_ERROR_EXIT:
        raise StageFailed("training data error:\n" + result.last_lines(10))
    if result.returncode != 0:
        raise StageFailed(f"trainer exited with {result.returncode}:\n" + result.last_lines(20))
    missing = [
        n for n in ("model.joblib", "vectorizer.joblib", "metrics.json") if not (out / n).is_file()
    ]
    if missing:
        raise StageFailed(f"the trainer did not write {', '.join(missing)}")
    return out


def read_metrics(model_dir: Path, key: str) -> dict[str, Any]:
    try:
        value = json.loads((model_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StageFailed(f"metrics.json of model {key[:12]} is unreadable: {exc}") from None
    if not isinstance(value, dict):
        raise StageFailed(f"metrics.json of model {key[:12]} is not an object")
    return value


def notes(metrics: dict[str, Any]) -> str:
    """What the status page must not hide about a model: a generated sample, degraded NLTK."""
    found = []
    data, nltk = metrics.get("data"), metrics.get("nltk")
    if isinstance(data, dict) and data.get("fallback"):
        found.append("TRAINED ON THE GENERATED SAMPLE, NOT ON REPOSITORY DATA")
    if isinstance(nltk, dict) and nltk.get("degraded"):
        missing = ", ".join(sorted(nltk.get("missing") or {})) or "some packages"
        found.append(f"NLTK data missing ({missing}): trained with fallbacks")
    return "".join(f"; {note}" for note in found)


def _producer(entry: Entry | None) -> str:
    build = entry.build_id if entry is not None else None
    return f"build #{build}" if build else "an unknown build"


def obtain_model(ctx: BuildContext, workspace: Path) -> tuple[Path, str, str, dict[str, Any]]:
    """(model dir, cache result, how it was obtained, its meta) for this build's model key."""
    decision = ctx.cache
    assert decision is not None
    store, level, key = decision.store, decision.model, decision.model.key

    def warn(message: str) -> None:
        ctx.log("train", f"warning: {message}\n")

    if level.result == "hit":
        entry = store.fetch(MODEL_KIND, key, workspace / "restored", warn)
        if entry is not None:
            level.entry = entry
            how = f"model cache hit: key {key[:12]} produced by {_producer(entry)}"
            return workspace / "restored", "hit", how, dict(entry.meta)
        level.result, level.why = "miss", "stored entry unusable (see log); retrained"
    nltk = prepare_nltk(ctx)
    if decision.nltk.result != "unused":
        ctx.recorder.metrics.cache.labels(level="nltk", result=decision.nltk.result).inc()
    model = run_trainer(ctx, workspace, nltk)
    meta = {
        "key": key,
        "build_id": ctx.build.id,
        "repo": ctx.repo.name,
        "sha": ctx.build.sha,
        "trainer_version": trainer.TRAINER_VERSION,
        "data": ctx.data.path if ctx.data else None,
        "data_id": ctx.data.content_id if ctx.data else None,
        "created_at": utcnow().isoformat(),
    }
    force = ctx.build.force
    why = "forced rebuild" if force else "cache miss"
    # A forced build replaces whatever is stored and always uses what it trained.
    entry, won = store.publish(MODEL_KIND, key, model, meta, warn, replace=force)
    level.entry = entry
    if won or force:
        return model, "miss", f"trained ({why}), stored as key {key[:12]}", meta
    theirs = store.fetch(MODEL_KIND, key, workspace / "theirs", warn)
    if theirs is None:
        # Theirs cannot be restored: this build's own model is as good.
        return model, "miss", f"trained ({why}); the stored key {key[:12]} is unusable", meta
    ctx.log("train", f"{_producer(entry)} stored key {key[:12]} first; using its model\n")
    how = f"trained ({why}), but {_producer(entry)} stored key {key[:12]} first: using its model"
    return workspace / "theirs", "miss", how, dict(theirs.meta)


def make_train_stage(deployed_metrics: DeployedMetrics) -> Callable[[BuildContext], Outcome]:
    """The train stage, judging new models against what `deployed_metrics` returns."""

    def train_stage(ctx: BuildContext) -> Outcome:
        if ctx.keys is None or ctx.data is None or ctx.cache is None:
            raise RuntimeError("no cache key: the hash stage has not run")
        key = ctx.keys.model
        workspace = Workspace(ctx.settings.work_dir / ctx.repo.slug, f"b{ctx.build.id}-model")
        ctx.cleanup.callback(workspace.release)
        model_dir, result, how, meta = obtain_model(ctx, workspace.path)
        # Which build made the model, for the builder's release record (not a stored file).
        (model_dir / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        ctx.recorder.metrics.cache.labels(level="model", result=result).inc()
        metrics = read_metrics(model_dir, key)
        ctx.model_dir, ctx.metrics = model_dir, metrics
        deployed = deployed_metrics(ctx)
        decision = decide(
            metrics,
            deployed,
            min_macro_f1=ctx.repo.min_macro_f1,
            max_regression=ctx.repo.max_regression,
        )
        # The comparison itself, for the pull request comment: the gate's input, as it ran.
        if not ctx.recorder.muted():
            with ctx.recorder.engine.begin() as conn:
                record_train_result(
                    conn, ctx.build.id, metrics, deployed, decision.deploy, decision.reason
                )
        score = metrics.get("macro_f1")
        f1 = f"macro F1 {score:.3f}" if isinstance(score, int | float) else "macro F1 unknown"
        nltk = ctx.cache.nltk
        if nltk.result != "unused":
            how += f"; nltk: {nltk.result} ({nltk.why})"
        how += notes(metrics)
        if not decision.deploy:
            raise StageFailed(f"{how}; {f1}; quality gate refused: {decision.reason}")
        return Outcome(detail=f"{how}; {f1}; gate: {decision.reason}", cache=result)

    return train_stage
