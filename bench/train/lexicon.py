"""A sentiment lexicon on top of the trainer's features: measured, not built (issue 14, part 4).

    nice -n 10 uv run python bench/train/lexicon.py --nltk-data DIR [--seeds 0-9] [--cv]

DIR is an NLTK data directory with VADER's lexicon, `DIR/sentiment/vader_lexicon.zip`:
NLTK's own `vader_lexicon` package (`python -m nltk.downloader -d DIR vader_lexicon`), or
a zip made of the same `vader_lexicon.txt` from the `vaderSentiment` wheel on PyPI, stored
as `vader_lexicon/vader_lexicon.txt` (neither is a dependency of trainhook). Scores come from
NLTK's `nltk.sentiment.vader` analyser, which is what the trainer would use.

For each seed, the stratified 80/20 split of `splits.py`; the trainer's vectorizer (default
`TrainParams`) is fitted on the whole 80 % and `LinearSVC(C=0.1, class_weight="balanced")`
on its features, with dense columns appended, times a weight:
- `vader`: VADER's negative, neutral, positive and compound scores, and the compound's
  positive and negative parts;
- `counts`: a plain lexicon count (the sums of positive and negative lexicon values with a
  three-word negation scope, their counts, and whether the text has `?` or `!`); cheap, it
  needs no sentence rules;
- `vader+counts`: both.
With `--cv` the weight of `vader+counts` is chosen per split by 5-fold cross-validation on
that split's 80 % only (the issue's rule); without it every weight is reported, which looks
at the held-out 20 % and so flatters the best one.
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.svm import LinearSVC

from trainer import TrainParams, read_dataset
from trainer.features import fit_vectorizer
from trainer.model import build_vectorizer

ROOT = Path(__file__).resolve().parents[2]
AIRLINE = ROOT.parent / "shared" / "data" / "twitter_us_airline_sentiment.csv"
WEIGHTS = (0.25, 0.35, 0.5)
NEGATIONS = frozenset(
    [
        "not",
        "no",
        "never",
        "cannot",
        "nothing",
        "nobody",
        "none",
        "nor",
        "without",
        "dont",
        "didnt",
        "cant",
        "wont",
        "isnt",
        "wasnt",
        "aint",
        "doesnt",
    ]
)


def vader_scores(texts: list[str], analyser: Any) -> np.ndarray:
    rows = []
    for text in texts:
        s = analyser.polarity_scores(text)
        c = s["compound"]
        rows.append([s["neg"], s["neu"], s["pos"], c, max(c, 0.0), max(-c, 0.0)])
    return np.array(rows)


def lexicon_counts(texts: list[str], values: dict[str, float]) -> np.ndarray:
    rows = []
    for text in texts:
        pos = neg = npos = nneg = 0.0
        negate = 0
        for token in re.findall(r"[\w']+|[^\w\s]+", text.lower()):
            if token in NEGATIONS or token.endswith("n't"):
                negate = 3
                continue
            v = values.get(token)
            if v is not None:
                v = -0.74 * v if negate else v  # VADER's own negation factor
                if v > 0:
                    pos, npos = pos + v, npos + 1
                else:
                    neg, nneg = neg - v, nneg + 1
            negate = max(negate - 1, 0)
        rows.append(
            [pos / 4, neg / 4, math.log1p(npos), math.log1p(nneg), "?" in text, "!" in text]
        )
    return np.array(rows, dtype=float)


def features(train_texts: list[str], test_texts: list[str]) -> tuple[Any, Any]:
    """The trainer's TF-IDF of both parts, the vectorizer fitted on the first: once per
    split or fold, shared by every weight and feature set scored on it."""
    vectorizer = build_vectorizer(TrainParams())
    return fit_vectorizer(vectorizer, train_texts, workers=1), vectorizer.transform(test_texts)


def score(
    a: Any, train_y: list[str], b: Any, test_y: list[str],
    dense_train: np.ndarray | None = None, dense_test: np.ndarray | None = None,
) -> float:  # fmt: skip
    """Macro-F1 on (b, test_y) of the SVM fitted on (a, train_y), dense columns appended."""
    if dense_train is not None and dense_test is not None:
        a = sp.hstack([a, sp.csr_matrix(dense_train)]).tocsr()
        b = sp.hstack([b, sp.csr_matrix(dense_test)]).tocsr()
    model = LinearSVC(C=0.1, class_weight="balanced").fit(a, train_y)
    return float(f1_score(test_y, model.predict(b), average="macro"))


def cv_weight(texts: list[str], labels: list[str], dense: np.ndarray, seed: int) -> float:
    """The weight with the best mean macro-F1 over 5 folds of these (training) rows."""
    folds = StratifiedKFold(5, shuffle=True, random_state=seed).split(texts, labels)
    scores: dict[float, list[float]] = {w: [] for w in WEIGHTS}
    for fit_rows, val_rows in folds:
        a, b = features([texts[i] for i in fit_rows], [texts[i] for i in val_rows])
        fy, vy = [labels[i] for i in fit_rows], [labels[i] for i in val_rows]
        for w in WEIGHTS:
            scores[w].append(score(a, fy, b, vy, dense[fit_rows] * w, dense[val_rows] * w))
    return max(WEIGHTS, key=lambda w: statistics.mean(scores[w]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nltk-data", type=Path, required=True, help="holds VADER's lexicon")
    parser.add_argument("--seeds", default="0-9")
    parser.add_argument("--cv", action="store_true", help="choose the weight by 5-fold CV")
    args = parser.parse_args()
    first, _, last = args.seeds.partition("-")
    seeds = range(int(first), int(last or first) + 1)

    ds = read_dataset(AIRLINE)
    texts, labels = list(ds.texts), list(ds.labels)
    import nltk
    from nltk.sentiment.vader import SentimentIntensityAnalyzer

    nltk.data.path.insert(0, str(args.nltk_data))
    analyser = SentimentIntensityAnalyzer()
    t0 = time.perf_counter()
    vader = vader_scores(texts, analyser)
    print(f"VADER scores of {len(texts)} texts: {time.perf_counter() - t0:.2f} s", flush=True)
    t0 = time.perf_counter()
    counts = lexicon_counts(texts, analyser.lexicon)
    print(f"lexicon counts: {time.perf_counter() - t0:.2f} s", flush=True)
    sets = {"vader": vader, "counts": counts, "vader+counts": np.column_stack([vader, counts])}
    runs: dict[str, list[float]] = {}
    for seed in seeds:
        train, test = train_test_split(
            np.arange(len(texts)), test_size=0.2, stratify=labels, random_state=seed
        )
        a, b = features([texts[i] for i in train], [texts[i] for i in test])
        ty, sy = [labels[i] for i in train], [labels[i] for i in test]
        line = {"plain": score(a, ty, b, sy)}
        if args.cv:
            dense = sets["vader+counts"]
            w = cv_weight([texts[i] for i in train], ty, dense[train], seed)
            line[f"vader+counts CV (w {w})"] = score(
                a, ty, b, sy, dense[train] * w, dense[test] * w
            )
        else:
            for name, dense in sets.items():
                for w in WEIGHTS:
                    line[f"{name} {w}"] = score(a, ty, b, sy, dense[train] * w, dense[test] * w)
        for name, value in line.items():
            runs.setdefault(name.split(" (")[0], []).append(value)
        print(seed, {k: round(v, 4) for k, v in line.items()}, flush=True)
    for name, scores in runs.items():
        print(f"{name:24} mean {statistics.mean(scores):.4f}  min {min(scores):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
