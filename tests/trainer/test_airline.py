"""The real thing: Twitter US Airline Sentiment from ../shared/data (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import joblib

from tests.trainer.conftest import airline_csv
from trainer.data import read_dataset
from trainer.pipeline import train


def test_airline_rows_are_accounted_for() -> None:
    ds = read_dataset(airline_csv())
    assert ds.rows_read == 14640
    assert ds.dropped == {"duplicate_text": 188, "duplicate_text_conflicting_label": 28}
    assert ds.class_counts == {"negative": 9080, "neutral": 3056, "positive": 2288}


def test_airline_model_reaches_the_tuned_macro_f1(tmp_path: Path) -> None:
    result = train(airline_csv(), tmp_path / "airline")
    rows = result.metrics["rows"]
    assert (rows["train"], rows["validation"]) == (11539, 2885)
    # Measured 0.7767 with the default params; the benchmark's target is 0.78 (not met).
    assert result.macro_f1 >= 0.77
    model = joblib.load(tmp_path / "airline" / "model.joblib")
    vectorizer = joblib.load(tmp_path / "airline" / "vectorizer.joblib")
    texts = ["@united thank you, the crew was amazing!", "@AmericanAir 3 hours on hold. Awful."]
    assert list(model.predict(vectorizer.transform(texts))) == ["positive", "negative"]
