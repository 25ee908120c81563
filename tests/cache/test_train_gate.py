"""The train stage judges the model with the repository's own gate (`min_macro_f1`,
`max_regression`) against the deployed model, and the hash stage keys the model by every
training parameter, the trainer's defaults included."""

from __future__ import annotations

import pytest

import trainer
from tests.cache.harness import DATA, Builds, fake_model
from trainer.params import TrainParams
from worker.hash.keys import cache_scope, model_key
from worker.stage import StageFailed
from worker.training import make_train_stage


def judged(b: Builds, origin, new_f1: float, deployed_f1: float | None) -> tuple[bool, str]:
    """Train a commit whose model (macro F1 `new_f1`) is in the cache, with a deployed model
    of `deployed_f1` (None: nothing deployed): (passed the gate, the train stage's detail)."""
    sha = origin.commit({"data/train.csv": DATA})
    ctx, _ = b.hash(sha)
    assert ctx.keys is not None
    folder = fake_model(b.settings.home / "m", macro_f1=new_f1)
    b.store.publish("models", ctx.keys.model, folder, {"build_id": 7})
    ctx.cleanup.close()
    deployed = None if deployed_f1 is None else {"macro_f1": deployed_f1}
    b.train_stage = make_train_stage(lambda ctx: deployed)
    try:
        _, _, outcome = b.train(sha)
    except StageFailed as exc:
        return False, str(exc)
    return True, outcome.detail or ""


@pytest.mark.parametrize(
    ("allowed", "new", "deployed", "passes"),
    [
        (0.05, 0.80, 0.84, True),  # the default allowance (0.02) would refuse it
        (0.01, 0.80, 0.815, False),  # the default allowance would let it through
    ],
)
def test_the_train_stage_applies_the_repositorys_max_regression(
    builds, origin, allowed, new, deployed, passes
):
    b = builds(extra=f'data = ["data/train.csv"]\nmax_regression = {allowed}')

    passed, detail = judged(b, origin, new, deployed)

    assert passed is passes, detail
    assert f"allowed regression {allowed:.4f}" in detail


def test_the_train_stage_applies_the_repositorys_minimum_with_a_model_deployed(builds, origin):
    b = builds(extra='data = ["data/train.csv"]\nmin_macro_f1 = 0.85')

    passed, detail = judged(b, origin, 0.80, 0.70)

    assert not passed and "quality gate refused" in detail and "below the minimum" in detail


def test_the_train_stage_deploys_a_first_model_that_meets_the_minimum(builds, origin):
    b = builds(extra='data = ["data/train.csv"]\nmin_macro_f1 = 0.75')

    passed, detail = judged(b, origin, 0.80, None)

    assert passed and "no model deployed yet" in detail


def test_the_model_key_holds_every_trainer_default_not_only_the_configured_params(builds, origin):
    b = builds(extra='data = ["data/train.csv"]\nparams = { C = 0.5 }')
    sha = origin.commit({"data/train.csv": DATA})

    ctx, _ = b.hash(sha)
    ctx.cleanup.close()

    repo = b.settings.repos[0]
    full = TrainParams(C=0.5).to_dict()
    assert ctx.cache is not None and ctx.cache.params == full
    assert ctx.cache.inputs["model"]["params"] == full
    assert ctx.data is not None and ctx.keys is not None
    expected = model_key(trainer.TRAINER_VERSION, full, [ctx.data.content_id], cache_scope(repo))
    assert ctx.keys.model == expected
