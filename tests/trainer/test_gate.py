"""Quality gate: deploy only good enough models that do not regress too much."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trainer.gate import GateDecision, decide


def m(f1: object, labels: list[str] | None = None) -> dict:
    return {"macro_f1": f1, "confusion_matrix": {"labels": labels or ["neg", "pos"]}}


def test_first_model_is_deployed_when_it_meets_the_minimum() -> None:
    decision = decide(m(0.8), None, min_macro_f1=0.7)
    assert (
        decision == GateDecision(True, decision.reason) and "no model deployed" in decision.reason
    )


def test_model_below_the_minimum_is_refused() -> None:
    decision = decide(m(0.6), None, min_macro_f1=0.7)
    assert not decision.deploy and "below the minimum" in decision.reason


def test_exactly_at_the_thresholds_is_deployed() -> None:
    assert decide(m(0.7), None, min_macro_f1=0.7).deploy
    assert decide(m(0.78), m(0.8), max_regression=0.02).deploy


def test_regression_beyond_the_allowance_is_refused() -> None:
    decision = decide(m(0.75), m(0.8), min_macro_f1=0.5, max_regression=0.02)
    assert not decision.deploy and "0.0500 below the current 0.8000" in decision.reason


def test_small_regression_and_improvement_are_deployed() -> None:
    assert decide(m(0.79), m(0.8), max_regression=0.02).deploy
    assert "+0.0500" in decide(m(0.85), m(0.8)).reason


@pytest.mark.parametrize("bad", [None, "0.9", float("nan"), 1.5, -0.1, True])
def test_new_metrics_without_a_valid_macro_f1_are_refused(bad: object) -> None:
    assert not decide(m(bad), None).deploy


def test_current_metrics_without_macro_f1_do_not_block() -> None:
    decision = decide(m(0.8), {"accuracy": 0.9})
    assert decision.deploy and "current model has no valid macro_f1" in decision.reason


def test_a_changed_label_set_is_mentioned() -> None:
    decision = decide(m(0.8, ["a", "b", "c"]), m(0.8, ["a", "b"]))
    assert decision.deploy and "label set changed" in decision.reason


@pytest.mark.parametrize("kwargs", [{"min_macro_f1": 1.5}, {"max_regression": -0.1}])
def test_thresholds_outside_zero_one_are_a_programming_error(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        decide(m(0.8), None, **kwargs)


unit = st.floats(0, 1)


@given(new=unit, better=unit, current=st.one_of(st.none(), unit), floor=unit, allow=unit)
def test_a_better_model_is_never_refused_when_a_worse_one_is_deployed(
    new: float, better: float, current: float | None, floor: float, allow: float
) -> None:
    high = max(new, better)
    cur = None if current is None else m(current)
    if decide(m(new), cur, floor, allow).deploy:
        assert decide(m(high), cur, floor, allow).deploy
