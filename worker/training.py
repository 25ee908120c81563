"""The train stage: reuse the cached model for this key or train one in a child process,
then the quality gate against the model currently deployed."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from typing import Any

import trainer
from trainer.gate import decide
from trainhook.models import utcnow
from worker.commands import child_env, run_command
from worker.context import BuildContext
from worker.modelcache import CachedModel, ModelCache
from worker.stage import Outcome, StageFailed
from worker.testcommand import secret_names

DATA_ERROR_EXIT = 2  # the trainer's exit status for bad data (contract of `python -m trainer`)

# Given the build context, the metrics.json of the model deployed now (None: nothing is).
DeployedMetrics = Callable[[BuildContext], "dict[str, Any] | None"]


def trainer_argv(ctx: BuildContext, out: str) -> list[str]:
    """`python -m trainer train …` for this build. `-P` keeps the checkout's own modules
    (say, a `trainer/` folder in the repository) from shadowing the real trainer."""
    assert ctx.data is not None and ctx.keys is not None
    source = ctx.need_source()
    argv = [sys.executable, "-P", "-m", "trainer", "train"]
    if ctx.data.path is None:
        # No configured file exists: let the trainer discover, then fall back to its sample.
        argv += [str(source), "--data-candidates", ",".join(ctx.data.candidates)]
    else:
        argv.append(str(source / ctx.data.path))
    nltk_dir = ctx.settings.home / "cache" / "nltk" / ctx.keys.nltk[:16]
    return [
        *argv,
        "--out",
        out,
        "--text-column",
        ctx.repo.text_column,
        "--label-column",
        ctx.repo.label_column,
        "--nltk-data",
        str(nltk_dir),
    ]


def train_model(ctx: BuildContext, cache: ModelCache, key: str) -> CachedModel:
    """Run the trainer and publish its output as the cache entry for `key`."""
    # The trainer writes --out atomically through its own temp dir beside it: give it a
    # scratch dir of ours, so whatever a killed trainer leaves behind is removed with it.
    scratch = cache.staging(key)
    out = scratch / "model"
    argv = trainer_argv(ctx, str(out))
    ctx.log("train", "$ python -m trainer " + " ".join(argv[4:]) + "\n")
    try:
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
        meta = {
            "key": key,
            "build_id": ctx.build.id,
            "repo": ctx.repo.name,
            "sha": ctx.build.sha,
            "trainer_version": trainer.TRAINER_VERSION,
            "data": ctx.data.path if ctx.data else None,
            "created_at": utcnow().isoformat(),
        }
        try:
            entry, won = cache.publish(key, out, meta)
        except ValueError as exc:
            raise StageFailed(str(exc)) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if not won:
        ctx.log("train", f"another worker stored key {key[:12]} first; using its model\n")
    return entry


def read_metrics(entry: CachedModel) -> dict[str, Any]:
    try:
        value = json.loads((entry.path / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StageFailed(f"metrics.json of model {entry.key[:12]} is unreadable: {exc}") from None
    if not isinstance(value, dict):
        raise StageFailed(f"metrics.json of model {entry.key[:12]} is not an object")
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


def make_train_stage(deployed_metrics: DeployedMetrics) -> Callable[[BuildContext], Outcome]:
    """The train stage, judging new models against what `deployed_metrics` returns."""

    def train_stage(ctx: BuildContext) -> Outcome:
        if ctx.keys is None or ctx.data is None:
            raise RuntimeError("no cache key: the hash stage has not run")
        key = ctx.keys.model
        cache = ModelCache(ctx.settings.artifacts_path / "models")
        entry = None if ctx.build.force else cache.lookup(key)
        if entry is not None:
            result = "hit"
            producer = f"build #{entry.build_id}" if entry.build_id else "an unknown build"
            how = f"model cache hit: key {key[:12]} produced by {producer}"
        else:
            result = "miss"
            entry = train_model(ctx, cache, key)
            why = "forced rebuild" if ctx.build.force else "cache miss"
            how = f"trained ({why}), stored as key {key[:12]}"
        ctx.recorder.metrics.cache.labels(level="model", result=result).inc()
        metrics = read_metrics(entry)
        ctx.model_dir, ctx.metrics = entry.path, metrics
        decision = decide(
            metrics,
            deployed_metrics(ctx),
            min_macro_f1=ctx.repo.min_macro_f1,
            max_regression=ctx.repo.max_regression,
        )
        score = metrics.get("macro_f1")
        f1 = f"macro F1 {score:.3f}" if isinstance(score, int | float) else "macro F1 unknown"
        how += notes(metrics)
        if not decision.deploy:
            raise StageFailed(f"{how}; {f1}; quality gate refused: {decision.reason}")
        return Outcome(detail=f"{how}; {f1}; gate: {decision.reason}", cache=result)

    return train_stage
