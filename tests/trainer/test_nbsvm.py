"""NB-SVM fitting: a plain fitted LinearSVC whose weights fold in the log-count ratios."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.svm import LinearSVC

from trainer.model import _log_count_ratio, build_classifier, fit_classifier, nb_alpha
from trainer.params import TrainParams

ROWS = sp.csr_matrix(
    np.array(
        [[1, 0, 1, 0], [1, 1, 0, 0], [0, 1, 0, 1], [0, 0, 1, 1], [1, 0, 0, 1], [0, 1, 1, 0]],
        dtype=np.float32,
    )
)


@pytest.mark.parametrize("labels", [list("aabbcc"), list("aaabbb")])
def test_nbsvm_ships_a_linear_svc_equal_to_the_scaled_binary_models(labels: list[str]) -> None:
    params = TrainParams()
    model = build_classifier(params)
    fit_classifier(model, ROWS, labels, nb_alpha=nb_alpha(params))

    assert type(model) is LinearSVC and list(model.classes_) == sorted(set(labels))
    y = np.asarray(labels)
    positives = model.classes_[1:] if len(model.classes_) == 2 else model.classes_
    for row, positive in enumerate(positives):
        present = ROWS.copy()
        present.data[:] = 1
        ratio = _log_count_ratio(present, y == positive, 1.0)
        binary = LinearSVC(C=0.1, class_weight="balanced", dual=True, random_state=0)
        binary.fit(ROWS @ sp.diags(ratio), y == positive)
        expected = binary.decision_function(ROWS @ sp.diags(ratio))
        assert np.allclose(model.decision_function(ROWS).reshape(6, -1)[:, row], expected)
    assert model.predict(ROWS).shape == (6,)


def test_other_classifiers_fit_plainly() -> None:
    assert nb_alpha(TrainParams(classifier="linear_svc")) is None
