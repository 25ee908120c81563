"""The train stage: restore the stored model for this key, or train one in a child process
and store it; then the quality gate against the model currently deployed."""

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
from worker.commands import child_env, run_command
from worker.context import BuildContext
from worker.hash.gcsobjects import download_object
from worker.nltkcache import prepare_nltk
from worker.stage import Outcome, StageFailed
from worker.testcommand import secret_names
from worker.workspace import Workspace

log = logging.getLogger(__name__)

DATA_ERROR_EXIT = 2  # the trainer's exit status for bad data (contract of `python -m trainer`)
MODEL_KIND = "models"

# Given the build context, the metrics.json of the model deployed now (None: nothing is).
DeployedMetrics = Callable[[BuildContext], "dict[str, Any] | None"]


def trainer_argv(ctx: BuildContext, data: Path | None, out: str, nltk: Path | None) -> list[str]:
    """`python -m trainer train …` for this build. `-P` keeps the checkout's own modules
    (say, a `trainer/` folder in the repository) from shadowing the real trainer."""
    assert ctx.data is not None
    source = ctx.need_source()
    argv = [sys.executable, "-P", "-m", "trainer", "train"]
    if data is None:
        # No configured file exists: let the trainer discover, then fall back to its sample.
        local = [c for c in ctx.data.candidates if not c.startswith("gs://")]
        argv += [str(source), "--data-candidates", ",".join(local) or "-"]
    else:
        argv.append(str(data))
    argv += ["--out", out, "--params", json.dumps(ctx.repo.train_params, sort_keys=True)]
    if nltk is not None:
        argv += ["--nltk-data", str(nltk)]
        if ctx.settings.nltk_index:
            argv += ["--nltk-index", ctx.settings.nltk_index]
    return argv


def data_file(ctx: BuildContext, scratch: Path) -> Path | None:
    """The data file to train on, fetched first when it is not on this machine."""
    data = ctx.data
    assert data is not None
    if data.path is None:
        return None
    if data.local is not None:
        return data.local
    if data.source == "gs":
        name = data.path.rsplit("/", 1)[-1] or "data.csv"
        ctx.log("train", f"downloading {data.path} (generation {data.remote.generation})\n")
        client = getattr(ctx.cache.store, "client", None) if ctx.cache else None
        if client is None:
            client = make_gcs_client()
        from google.api_core.exceptions import NotFound

        try:
            return download_object(client, data.remote, scratch / "data" / name)
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
    """Train into `scratch/model` and return it."""
    out = scratch / "model"
    argv = trainer_argv(ctx, data_file(ctx, scratch), str(out), nltk)
    ctx.log("train", "$ python -m trainer " + " ".join(argv[4:]) + "\n")
    result = run_command(
        argv,
        cwd=ctx.need_source(),
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
    why = "forced rebuild" if ctx.build.force else "cache miss"
    entry, won = store.publish(MODEL_KIND, key, model, meta, warn)
    level.entry = entry
    if won:
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
        decision = decide(
            metrics,
            deployed_metrics(ctx),
            min_macro_f1=ctx.repo.min_macro_f1,
            max_regression=ctx.repo.max_regression,
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
