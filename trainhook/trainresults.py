"""What the train stage compared: the candidate model's figures, those of the model deployed
when the quality gate ran (its input), and the gate's verdict. The worker records it; the
pull request comment (service/pullcomments.py) shows it. Only the figures a reader compares
are kept, not the whole metrics.json: macro-F1, F1 per class, rows, labels."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from trainhook.models import train_results, utcnow

ROWS = ("read", "used", "train", "validation")


def figures(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    """The comparable figures of a metrics.json (None stays None); unknown values are None."""
    if not isinstance(metrics, dict):
        return None
    per_class = metrics.get("per_class")
    f1 = {
        str(label): m.get("f1")
        for label, m in (per_class.items() if isinstance(per_class, dict) else ())
        if isinstance(m, dict) and isinstance(m.get("f1"), int | float)
    }
    matrix = metrics.get("confusion_matrix")
    labels = matrix.get("labels") if isinstance(matrix, dict) else None
    rows = metrics.get("rows")
    macro = metrics.get("macro_f1")
    return {
        "macro_f1": macro
        if isinstance(macro, int | float) and not isinstance(macro, bool)
        else None,
        "f1": f1,
        "rows": {k: rows.get(k) for k in ROWS} if isinstance(rows, dict) else {},
        "labels": [str(x) for x in labels] if isinstance(labels, list) else sorted(f1),
    }


@dataclass(frozen=True)
class TrainResult:
    candidate: dict[str, Any]
    deployed: dict[str, Any] | None
    passed: bool
    reason: str


def record_train_result(
    conn: sa.Connection,
    build_id: int,
    candidate: dict[str, Any],
    deployed: dict[str, Any] | None,
    passed: bool,
    reason: str,
) -> None:
    """Store (or, for a retried job, replace) build `build_id`'s train result."""
    values = {
        "candidate": json.dumps(figures(candidate), sort_keys=True),
        "deployed": None if deployed is None else json.dumps(figures(deployed), sort_keys=True),
        "passed": passed,
        "reason": reason,
        "recorded_at": utcnow(),
    }
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(
        dialect.insert(train_results)
        .values(build_id=build_id, **values)
        .on_conflict_do_update(index_elements=[train_results.c.build_id], set_=values)
    )


def train_result(conn: sa.Connection, build_id: int) -> TrainResult | None:
    """Build `build_id`'s train result, or None when its train stage recorded none."""
    row = conn.execute(sa.select(train_results).where(train_results.c.build_id == build_id)).first()
    if row is None:
        return None
    return TrainResult(
        candidate=json.loads(row.candidate),
        deployed=None if row.deployed is None else json.loads(row.deployed),
        passed=bool(row.passed),
        reason=row.reason,
    )
