"""The model: vectorizer and classifier construction, the validation split and evaluation."""

from __future__ import annotations

import multiprocessing
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from trainer.params import TrainParams
from trainhook_runtime.text import TweetNormalizer, TweetVectorizer


def build_vectorizer(
    params: TrainParams,
    stopwords: frozenset[str] = frozenset(),
    normalizer: TweetNormalizer | None = None,
) -> Any:
    """An unfitted `TweetVectorizer` configured from `params`; `normalizer` (one made from the
    same params, its caches warm) is reused when given."""
    if normalizer is None:
        normalizer = TweetNormalizer(
            lowercase=params.lowercase,
            handles=params.handles,
            stem=params.stem,
            stopwords=stopwords if params.stopwords else (),
        )
    return TweetVectorizer(
        normalizer,
        word_ngram_range=params.word_ngram_range,
        char_ngram_range=params.char_ngram_range,
        min_df=params.min_df,
        sublinear_tf=params.sublinear_tf,
        word_weight=params.word_weight,
        char_weight=params.char_weight,
    )


# Above this many non-zeros in the training matrix, classifier "auto" fits the linear SVM by
# SGD instead of liblinear. liblinear (scikit-learn's wrapper) copies the matrix into its own
# 16-byte-a-non-zero nodes: at 200k synthetic rows (35.6 M non-zeros) that copy alone was
# 575 MB of a 1.3 GB peak. SGD reads the float32 CSR matrix in place. Below this size the
# copy costs little and liblinear's exact solution is kept (the tuned airline figures).
SGD_MIN_NONZEROS = 10_000_000
# Epochs at most: SGD stops earlier once its loss no longer improves by tol 1e-3 (14 epochs at
# 200k synthetic rows, 19 on the airline tweets).
SGD_EPOCHS = 50


def resolve_classifier(params: TrainParams, nonzeros: int) -> str:
    """The classifier `params` ask for, with "auto" resolved for a matrix of `nonzeros`."""
    if params.classifier != "auto":
        return params.classifier
    return "sgd" if nonzeros > SGD_MIN_NONZEROS else "linear_svc"


def feature_dtype(classifier: str) -> Any:
    """The TF-IDF value type `classifier` fits on without converting (a copy) first."""
    return np.float32 if classifier == "sgd" else np.float64


def build_classifier(params: TrainParams, classifier: str = "linear_svc", rows: int = 1) -> Any:
    """An unfitted linear classifier (a resolved `classifier` name, see `resolve_classifier`)
    configured from `params` for `rows` training rows (seeded, so deterministic)."""
    if classifier == "sgd":
        from sklearn.linear_model import SGDClassifier

        # A linear SVM like LinearSVC(C): L2 penalty, SGD's alpha weighing it against the
        # MEAN loss where C weighs the summed loss, so alpha = 1 / (C n); averaged weights.
        # The loss is the smoothed hinge ("modified_huber"): validation macro-F1 (seed 0)
        # against LinearSVC, airline 0.7778 / 0.7804, UCI 0.8425 / 0.8342, 200k synthetic
        # 0.9186 / 0.9184; plain hinge gave airline 0.7694 and UCI 0.8124, and squared
        # hinge (LinearSVC's own) diverges at SGD's step sizes (0.6766).
        return SGDClassifier(
            loss="modified_huber",
            alpha=1.0 / (params.C * max(1, rows)),
            class_weight=params.class_weight,
            average=True,
            max_iter=min(params.max_iter, SGD_EPOCHS),
            tol=1e-3,
            random_state=params.seed,
        )
    if classifier == "logistic_regression":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(
            C=params.C,
            class_weight=params.class_weight,
            max_iter=params.max_iter,
            random_state=params.seed,
        )
    from sklearn.svm import LinearSVC

    # dual=True always: scikit-learn's "auto" picks the primal solver once rows outnumber
    # features, which took 87 s instead of 10 s on 136k synthetic rows.
    return LinearSVC(
        C=params.C,
        class_weight=params.class_weight,
        dual=True,
        max_iter=params.max_iter,
        random_state=params.seed,
    )


def split(labels: Sequence[str], params: TrainParams) -> tuple[list[int], list[int]]:
    """Stratified (train, validation) row indices; raises ValueError if too few rows."""
    from sklearn.model_selection import train_test_split

    indices = list(range(len(labels)))
    train, val = train_test_split(
        indices,
        test_size=params.validation_fraction,
        stratify=list(labels),
        random_state=params.seed,
    )
    return list(train), list(val)


def fit_classifier(model: Any, features: Any, labels: Sequence[str]) -> list[str]:
    """Fit `model` in place; return the warnings it raised (e.g. non-convergence)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(features, list(labels))
    return sorted({" ".join(str(w.message).split()) for w in caught})


# Largest held-out problem (train + validation non-zeros) fitted in a forked process beside the
# refit: its solver copy (16 bytes a non-zero) then adds at most ~160 MB to the memory in use.
CONCURRENT_FIT_MAX_NONZEROS = 10_000_000


def can_fork() -> bool:
    """Whether this platform can fork (a forked child shares the matrices without copying)."""
    return "fork" in multiprocessing.get_all_start_methods()


def fit_predict_in_child(
    model: Any, features: Any, labels: Sequence[str], to_predict: Any
) -> Callable[[], tuple[list[str], list[str]]]:
    """Fit `model` and predict `to_predict` in a forked process; return a function that waits
    for (the predicted labels, the warnings the fit raised).

    The child inherits the matrices (nothing is pickled but the result). Raises
    RuntimeError from the returned function if the child fails.
    """
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(
        target=_fit_predict, args=(send, model, features, labels, to_predict), daemon=True
    )
    child.start()
    send.close()

    def wait() -> tuple[list[str], list[str]]:
        try:
            outcome = receive.recv()
        except EOFError:
            outcome = None
        finally:
            receive.close()
            child.join()
        if not isinstance(outcome, tuple):
            raise RuntimeError(f"fitting the held-out model failed: {outcome or child.exitcode}")
        return outcome

    return wait


def _fit_predict(send: Any, model: Any, features: Any, labels: Any, to_predict: Any) -> None:
    try:
        caught = fit_classifier(model, features, labels)
        send.send(([str(p) for p in model.predict(to_predict)], caught))
    except BaseException as exc:  # reported to the parent, which raises
        send.send(f"{type(exc).__name__}: {exc}")
    finally:
        send.close()


def evaluate(truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix.

    The confusion matrix has a row per true label and a column per predicted label, both in
    the order of `labels`.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    order = list(labels)
    precision, recall, f1, support = precision_recall_fscore_support(
        list(truth), list(predicted), labels=order, zero_division=0
    )
    matrix = confusion_matrix(list(truth), list(predicted), labels=order)
    per_class = {
        label: {
            "precision": _round(precision[i]),
            "recall": _round(recall[i]),
            "f1": _round(f1[i]),
            "support": int(support[i]),
        }
        for i, label in enumerate(order)
    }
    accuracy = float(np.trace(matrix)) / max(1, int(matrix.sum()))
    return {
        "accuracy": _round(accuracy),
        "macro_f1": _round(float(np.mean(f1))),
        "per_class": per_class,
        "confusion_matrix": {"labels": order, "matrix": matrix.tolist()},
    }


def top_features(model: Any, vectorizer: Any, count: int = 10) -> dict[str, list[str]]:
    """The `count` features with the largest weights for each class (for the model card)."""
    coef = getattr(model, "coef_", None)
    if coef is None:
        return {}
    names = vectorizer.get_feature_names_out()
    classes = [str(c) for c in model.classes_]
    rows = coef if coef.shape[0] == len(classes) else np.vstack([-coef[0], coef[0]])
    out = {}
    for label, row in zip(classes, rows, strict=True):
        best = np.argsort(-row, kind="stable")[:count]
        out[label] = [names[i] for i in best]
    return out


def _round(value: float) -> float:
    return round(float(value), 6)
