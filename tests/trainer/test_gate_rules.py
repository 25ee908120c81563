"""The quality gate's rules, each on its own: the minimum holds whether or not a model is
deployed, the regression allowance is the caller's, and the reason says which rule decided."""

from __future__ import annotations

import pytest

from trainer.gate import DEFAULT_MAX_REGRESSION, DEFAULT_MIN_MACRO_F1, GateDecision, decide


def m(f1: object, labels: list[str] | None = None) -> dict:
    return {"macro_f1": f1, "confusion_matrix": {"labels": labels or ["neg", "pos"]}}


def test_the_minimum_is_enforced_when_a_model_is_deployed_too():
    decision = decide(m(0.6), m(0.55), min_macro_f1=0.7, max_regression=1.0)

    assert decision == GateDecision(
        False, "macro_f1 0.6000 is below the minimum 0.7000; not deploying"
    )


def test_the_minimum_is_enforced_when_the_deployed_model_has_no_usable_score():
    assert not decide(m(0.6), {"accuracy": 0.9}, min_macro_f1=0.7).deploy


def test_the_defaults_are_a_minimum_of_one_half_and_two_points_of_regression():
    assert (DEFAULT_MIN_MACRO_F1, DEFAULT_MAX_REGRESSION) == (0.5, 0.02)
    assert not decide(m(0.49), None).deploy
    assert decide(m(0.5), None).deploy
    assert decide(m(0.78), m(0.8)).deploy
    assert not decide(m(0.77), m(0.8)).deploy


def test_the_allowed_regression_is_the_callers_not_the_default():
    assert decide(m(0.70), m(0.80), max_regression=0.1).deploy
    assert not decide(m(0.79), m(0.80), max_regression=0.005).deploy


def test_a_first_model_reason_names_its_score_and_the_minimum():
    assert decide(m(0.8), None, min_macro_f1=0.7) == GateDecision(
        True, "no model deployed yet; macro_f1 0.8000 meets the minimum 0.7000"
    )


def test_a_deployed_model_without_a_score_reason_names_the_new_score():
    assert decide(m(0.8), {"macro_f1": float("nan")}) == GateDecision(
        True, "current model has no valid macro_f1; deploying macro_f1 0.8000"
    )


def test_a_regression_refusal_names_both_scores_and_the_allowance():
    assert decide(m(0.7), m(0.8), max_regression=0.05) == GateDecision(
        False,
        "macro_f1 0.7000 is 0.1000 below the current 0.8000, more than the allowed "
        "regression 0.0500; not deploying",
    )


def test_an_accepted_model_reason_names_the_change_and_the_allowance():
    assert decide(m(0.79), m(0.8), max_regression=0.05) == GateDecision(
        True, "macro_f1 0.7900 vs current 0.8000 (-0.0100, allowed regression 0.0500)"
    )


def test_a_changed_label_set_is_named_in_a_refusal_and_absent_when_unchanged():
    refused = decide(m(0.7, ["a", "b", "c"]), m(0.8, ["a", "b"]), max_regression=0.05)
    assert refused.reason.endswith("(the label set changed since the current model); not deploying")
    assert "label set" not in decide(m(0.8), m(0.8)).reason
    assert "label set" not in decide({"macro_f1": 0.8}, {"macro_f1": 0.8}).reason
    assert "label set changed" in decide(m(0.8), {"macro_f1": 0.8}).reason


def test_new_metrics_without_a_score_are_refused_with_that_reason():
    assert decide({"accuracy": 0.9}, None) == GateDecision(
        False, "new metrics have no valid macro_f1; not deploying"
    )
    assert not decide("not a dict", None).deploy  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, 1, 0.0, 1.0])
def test_thresholds_at_the_ends_of_zero_one_are_accepted(value: float):
    decide(m(0.8), None, min_macro_f1=value, max_regression=value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_macro_f1": -0.01},
        {"min_macro_f1": 1.01},
        {"max_regression": 1.01},
        {"min_macro_f1": "0.5"},
        {"max_regression": None},
    ],
)
def test_a_threshold_outside_zero_one_or_not_a_number_names_itself(kwargs: dict):
    (name,) = kwargs
    with pytest.raises(ValueError, match=f"^{name} must be a number in"):
        decide(m(0.8), None, **kwargs)


@pytest.mark.parametrize("score", [0, 1])
def test_integer_scores_at_the_ends_are_valid(score: int):
    assert decide(m(score), None, min_macro_f1=0).deploy is True
