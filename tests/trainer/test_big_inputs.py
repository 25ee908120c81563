"""Big inputs: the classifier chosen by size ("auto"), float32 features for SGD, and the
count matrix joined and narrowed without scipy's copies (the 200k-row memory figures are in
bench/README.md, "Train"; these tests pin the behaviour that makes them)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import trainer.model
from tests.trainer.test_pipeline import PROBES, predict
from trainer import features
from trainer.params import ParamsError, TrainParams
from trainer.pipeline import train
from trainhook_runtime import load_model
from trainhook_runtime.text import TweetNormalizer, TweetVectorizer

TWEETS = [
    "@SkyJet thanks so much, great crew :)",
    "flight cancelled again!!! worst ever #fail",
    "is the 5pm flight on time?",
    "Great great GREAT service today",
    "lost my bag, no answer from anyone",
    "thanks for nothing",
]


def test_auto_is_the_default_and_keeps_liblinear_for_a_small_input(
    sample_csv: Path, tmp_path: Path
) -> None:
    result = train(sample_csv, tmp_path / "model")

    assert TrainParams().classifier == "auto"
    assert result.metrics["classifier"] == "linear_svc"
    assert type(load_model(result.out_dir).model).__name__ == "LinearSVC"
    card = (result.out_dir / "model_card.md").read_text(encoding="utf-8")
    assert 'Classifier: linear SVM, LinearSVC (liblinear) (`classifier = "auto"`' in card


def test_a_big_input_is_fitted_by_sgd_and_the_card_and_metrics_say_so(
    sample_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Any input is "big" for this test: the 10 M non-zeros of a real one take a minute.
    monkeypatch.setattr(trainer.model, "SGD_MIN_NONZEROS", 0)

    result = train(sample_csv, tmp_path / "model")

    assert result.metrics["classifier"] == "sgd"
    assert result.metrics["params"]["classifier"] == "auto"
    model = load_model(result.out_dir)
    assert type(model.model).__name__ == "SGDClassifier"
    assert model.model.loss == "modified_huber"
    assert predict(result.out_dir, PROBES)[:2] == ["positive", "negative"]
    card = (result.out_dir / "model_card.md").read_text(encoding="utf-8")
    assert "Classifier: linear SVM (smoothed hinge loss), SGDClassifier" in card
    assert json.loads((result.out_dir / "metrics.json").read_text())["classifier"] == "sgd"
    # The shipped model is still refitted on every used row.
    rows = result.metrics["rows"]
    assert rows["shipped_model"] == rows["used"] > rows["train"]


def test_sgd_scores_like_liblinear_on_the_same_rows(sample_csv: Path, tmp_path: Path) -> None:
    svm = train(sample_csv, tmp_path / "svm", TrainParams(classifier="linear_svc"))
    sgd = train(sample_csv, tmp_path / "sgd", TrainParams(classifier="sgd"))

    # Its regularisation follows C through the row count (alpha = 1 / (C n)): a wrong
    # conversion (alpha = 1 / C, say) leaves a model that predicts one class only.
    assert sgd.metrics["classifier"] == "sgd"
    assert sgd.macro_f1 > 0.8
    assert abs(sgd.macro_f1 - svm.macro_f1) < 0.05


def test_an_explicit_classifier_is_kept_whatever_the_size(
    sample_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trainer.model, "SGD_MIN_NONZEROS", 0)

    result = train(sample_csv, tmp_path / "model", TrainParams(classifier="linear_svc"))

    assert result.metrics["classifier"] == "linear_svc"


def test_the_size_rule_counts_non_zeros_of_the_whole_matrix() -> None:
    auto = TrainParams()
    limit = trainer.model.SGD_MIN_NONZEROS

    assert trainer.model.resolve_classifier(auto, limit) == "linear_svc"
    assert trainer.model.resolve_classifier(auto, limit + 1) == "sgd"
    assert trainer.model.feature_dtype("sgd") == np.float32
    assert trainer.model.feature_dtype("linear_svc") == np.float64


def test_an_unknown_classifier_is_refused_with_the_choices() -> None:
    with pytest.raises(ParamsError, match=r"auto.*linear_svc.*sgd"):
        TrainParams(classifier="forest")


def test_float32_tfidf_rows_are_the_float64_ones_rounded() -> None:
    vec = TweetVectorizer(TweetNormalizer(), char_ngram_range=(2, 5), min_df=1)
    counts = features.count_features(vec, TWEETS)
    features.set_idf(vec, counts, counts.document_frequency(0, counts.rows), counts.rows)
    idf = features.fitted_idf(vec)

    wide = counts.tfidf(vec, 0, counts.rows, idf)
    narrow = counts.tfidf(vec, 0, counts.rows, idf, np.float32)

    assert wide.dtype == np.float64 and narrow.dtype == np.float32
    assert np.array_equal(wide.indices, narrow.indices)
    np.testing.assert_allclose(narrow.toarray(), wide.toarray(), rtol=1e-6, atol=1e-7)


def test_joined_counts_equal_scipys_hstack_and_are_narrowed() -> None:
    rng = np.random.default_rng(0)
    left = sp.random(50, 7, density=0.3, format="csr", random_state=1, dtype=np.float32)
    right = sp.random(50, 11, density=0.4, format="csr", random_state=2, dtype=np.float32)
    left.data = rng.integers(1, 9, left.nnz).astype(np.float32)
    right.data = rng.integers(1, 300, right.nnz).astype(np.float32)  # needs uint16
    expected = sp.hstack([left, right], format="csr").toarray()

    joined = features._join_columns(
        features._small_counts(left.copy()), features._small_counts(right.copy())
    )

    assert joined.dtype == np.uint16 and joined.indices.dtype == np.int32
    assert joined.shape == (50, 18)
    np.testing.assert_array_equal(joined.toarray(), expected)


def test_counts_keep_no_view_of_the_buffers_before_rare_columns_were_dropped() -> None:
    dense = np.arange(1, 31, dtype=np.float32).reshape(5, 6) % 4
    kept = features._keep_columns(
        sp.csr_matrix(dense), np.array([True, False, True, False, True, False])
    )

    small = features._small_counts(kept)

    assert small.data.dtype == np.uint8
    assert small.indices.base is None
    np.testing.assert_array_equal(small.toarray(), dense[:, [0, 2, 4]])
