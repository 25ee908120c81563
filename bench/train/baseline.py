"""Naive baseline for the train benchmark, run as its own process by run.py.

TweetTokenizer + SnowballStemmer on every token (no memoisation) as a TfidfVectorizer
tokenizer, word 1-2 grams, logistic regression. The rows are cleaned like the trainer does
(whitespace normalised, empty and duplicate texts dropped) so that the stratified 80/20
split (seed 0) is the very split the trainer validates on, and the F1 figures compare.

    python bench/train/baseline.py DATA.csv OUT_DIR
Prints one JSON line: rows, macro_f1, seconds per phase.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

started = time.perf_counter()

import joblib  # noqa: E402
from nltk.stem.snowball import SnowballStemmer  # noqa: E402
from nltk.tokenize import TweetTokenizer  # noqa: E402
from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import f1_score  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

TOKENIZER = TweetTokenizer(preserve_case=False, reduce_len=True, strip_handles=True)
STEMMER = SnowballStemmer("english")


def analyze(text: str) -> list[str]:
    return [STEMMER.stem(token) for token in TOKENIZER.tokenize(text)]


def main(data: str, out: str) -> None:
    timings = {"imports": time.perf_counter() - started}
    t0 = time.perf_counter()
    texts, labels, seen = [], [], set()
    with open(data, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            text = " ".join(row["text"].split())
            if text and row["label"].strip() and text not in seen:
                seen.add(text)
                texts.append(text)
                labels.append(row["label"].strip())
    x_train, x_val, y_train, y_val = train_test_split(
        texts, labels, test_size=0.2, stratify=labels, random_state=0
    )
    timings["read"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    vectorizer = TfidfVectorizer(
        tokenizer=analyze, lowercase=False, token_pattern=None, ngram_range=(1, 2)
    )
    features = vectorizer.fit_transform(x_train)
    timings["features"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = LogisticRegression(max_iter=1000).fit(features, y_train)
    timings["fit"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    predicted = model.predict(vectorizer.transform(x_val))
    macro_f1 = f1_score(y_val, predicted, average="macro")
    timings["evaluate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    Path(out).mkdir(parents=True, exist_ok=True)
    joblib.dump(model, Path(out) / "model.joblib")
    joblib.dump(vectorizer, Path(out) / "vectorizer.joblib")
    timings["write"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started
    result = {"rows": len(texts), "train": len(x_train), "validation": len(x_val)}
    result["macro_f1"] = round(float(macro_f1), 6)
    result["timings"] = {k: round(v, 3) for k, v in timings.items()}
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
