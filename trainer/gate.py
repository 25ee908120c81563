"""Quality gate: should a newly trained model replace the one currently deployed?

The pipeline calls `decide` with the new metrics.json and the current model's (None if
nothing is deployed) before the build stages; `deploy=False` stops the build with `reason`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

DEFAULT_MIN_MACRO_F1 = 0.5
DEFAULT_MAX_REGRESSION = 0.02
# Metrics are rounded to 6 decimals; this keeps "exactly at the threshold" on the safe side.
_EPSILON = 1e-9


@dataclass(frozen=True)
class GateDecision:
    """The verdict and a human-readable reason (shown on the build page)."""

    deploy: bool
    reason: str


def decide(
    new_metrics: dict[str, Any],
    current_metrics: dict[str, Any] | None,
    min_macro_f1: float = DEFAULT_MIN_MACRO_F1,
    max_regression: float = DEFAULT_MAX_REGRESSION,
) -> GateDecision:
    """Deploy when macro-F1 meets `min_macro_f1` and is at most `max_regression` below current.

    A current model without a usable macro-F1 does not block; new metrics without one do.
    Raises ValueError if a threshold is outside [0, 1].
    """
    for name, value in (("min_macro_f1", min_macro_f1), ("max_regression", max_regression)):
        if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be a number in [0, 1], not {value!r}")
    new = _macro_f1(new_metrics)
    if new is None:
        return GateDecision(False, "new metrics have no valid macro_f1; not deploying")
    if new + _EPSILON < min_macro_f1:
        return GateDecision(
            False, f"macro_f1 {new:.4f} is below the minimum {min_macro_f1:.4f}; not deploying"
        )
    if current_metrics is None:
        return GateDecision(
            True, f"no model deployed yet; macro_f1 {new:.4f} meets the minimum {min_macro_f1:.4f}"
        )
    current = _macro_f1(current_metrics)
    if current is None:
        return GateDecision(
            True, f"current model has no valid macro_f1; deploying macro_f1 {new:.4f}"
        )
    change = new - current
    note = ""
    if _labels(new_metrics) != _labels(current_metrics):
        note = " (the label set changed since the current model)"
    if change + _EPSILON < -max_regression:
        return GateDecision(
            False,
            f"macro_f1 {new:.4f} is {-change:.4f} below the current {current:.4f}, more than "
            f"the allowed regression {max_regression:.4f}{note}; not deploying",
        )
    return GateDecision(
        True,
        f"macro_f1 {new:.4f} vs current {current:.4f} ({change:+.4f}, allowed regression "
        f"{max_regression:.4f}){note}",
    )


def _macro_f1(metrics: Any) -> float | None:
    if not isinstance(metrics, dict):
        return None
    value = metrics.get("macro_f1")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        return None
    return float(value)


def _labels(metrics: dict[str, Any]) -> list[Any] | None:
    matrix = metrics.get("confusion_matrix")
    return matrix.get("labels") if isinstance(matrix, dict) else None
