"""The strong scikit-learn baseline of the train benchmark.

scikit-learn's own `TfidfVectorizer` for word 1-2 grams (tokenised by the trainer's memoised
NLTK normaliser, `trainhook_runtime.text.TweetNormalizer`) and `TfidfVectorizer(analyzer=
"char_wb")` for character 2-5 grams, joined in a `FeatureUnion`, then `LinearSVC` with the
trainer's settings (C 0.1, balanced class weights, sublinear TF, min_df 2). Used in process by
splits.py, and as its own process for wall time and memory:

    python bench/train/strong.py DATA.csv OUT_DIR [--refit]
Prints one JSON line: rows, macro_f1 (stratified 80/20 split, seed 0), seconds per phase.
With --refit it does the trainer's whole job: after scoring the held-out split it fits the
pipeline again on every row and saves that one (the trainer's default, `refit = true`), so
that the two whole processes differ only in how they tokenise, count and fit.
"""

from __future__ import annotations

import sys
import time
from typing import Any

started = time.perf_counter()

from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: E402
from sklearn.pipeline import FeatureUnion, make_pipeline  # noqa: E402
from sklearn.svm import LinearSVC  # noqa: E402

from trainhook_runtime.text import TweetNormalizer  # noqa: E402


def build_strong() -> Any:
    """The unfitted baseline pipeline: FeatureUnion(word, char_wb) -> LinearSVC."""
    word = TfidfVectorizer(
        tokenizer=TweetNormalizer(),
        lowercase=False,
        token_pattern=None,
        ngram_range=(1, 2),
        min_df=2,
        sublinear_tf=True,
    )
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True)
    features = FeatureUnion([("word", word), ("char", char)])
    return make_pipeline(features, LinearSVC(C=0.1, class_weight="balanced", dual=True))


def fit_strong(texts: list[str], labels: list[str]) -> Any:
    """The baseline fitted on `texts`."""
    model = build_strong()
    model.fit(texts, labels)
    return model


def main(data: str, out: str, refit: bool = False) -> None:
    import json
    from pathlib import Path

    import joblib
    from sklearn.metrics import f1_score
    from sklearn.model_selection import train_test_split

    from trainer.data import read_dataset

    timings = {"imports": time.perf_counter() - started}
    t0 = time.perf_counter()
    ds = read_dataset(data)
    x_train, x_val, y_train, y_val = train_test_split(
        ds.texts, ds.labels, test_size=0.2, stratify=ds.labels, random_state=0
    )
    timings["read"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = fit_strong(x_train, y_train)
    timings["fit"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    macro_f1 = f1_score(y_val, model.predict(x_val), average="macro")
    timings["evaluate"] = time.perf_counter() - t0
    if refit:
        t0 = time.perf_counter()
        model = fit_strong(ds.texts, ds.labels)
        timings["refit"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    Path(out).mkdir(parents=True, exist_ok=True)
    joblib.dump(model, Path(out) / "model.joblib")
    timings["write"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started
    result = {"rows": len(ds.texts), "train": len(x_train), "validation": len(x_val)}
    result["macro_f1"] = round(float(macro_f1), 6)
    result["timings"] = {k: round(v, 3) for k, v in timings.items()}
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], refit="--refit" in sys.argv[3:])
