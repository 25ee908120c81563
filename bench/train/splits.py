"""Quality on every split: the trainer against the strong scikit-learn baseline, ten splits.

    nice -n 10 uv run python bench/train/splits.py [--seeds 0-9] [--params JSON] [--data NAME]

For each seed, a stratified 80/20 split of the cleaned rows (the trainer's own reading:
whitespace normalised, empty and duplicate texts dropped). The trainer is given only the
80 % (as a CSV file, through `trainer.train`, so its internal validation split, its settings
and its refit all happen inside those rows), then its shipped model is scored on the 20 %.
The strong baseline (bench/train/strong.py: scikit-learn's word + char_wb `TfidfVectorizer`
in a `FeatureUnion` with the trainer's memoised NLTK normaliser, `LinearSVC`) is fitted on
the whole 80 % and scored on the same 20 %. Prints one line per split and a summary; the
figures go to bench/train/splits-<data>-<date>.json. Slow on purpose (a full training per
split): a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split

from trainer import TrainParams, read_dataset, train
from trainhook_runtime import load_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from strong import fit_strong

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
FILES = {
    "airline": DATA / "twitter_us_airline_sentiment.csv",
    "uci": DATA / "uci_sentiment_labelled_sentences.csv",
}
HERE = Path(__file__).resolve().parent


def seeds_of(spec: str) -> list[int]:
    low, _, high = spec.partition("-")
    return list(range(int(low), int(high or low) + 1))


def write_csv(path: Path, texts: list[str], labels: list[str]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(zip(texts, labels, strict=True))


def one_split(
    texts: list[str], labels: list[str], seed: int, params: TrainParams, tmp: Path, strong: bool
) -> dict:
    train_idx, test_idx = train_test_split(
        list(range(len(texts))), test_size=0.2, stratify=labels, random_state=seed
    )
    tr_texts, tr_labels = [texts[i] for i in train_idx], [labels[i] for i in train_idx]
    te_texts, te_labels = [texts[i] for i in test_idx], [labels[i] for i in test_idx]
    data = tmp / f"train-{seed}.csv"
    write_csv(data, tr_texts, tr_labels)
    t0 = time.perf_counter()
    result = train(data, tmp / f"model-{seed}", params)
    trainer_s = time.perf_counter() - t0
    predicted = load_model(tmp / f"model-{seed}").predict(te_texts)
    row = {
        "seed": seed,
        "trainer": round(float(f1_score(te_labels, predicted, average="macro")), 4),
        "trainer_internal_validation": result.macro_f1,
        "trainer_s": round(trainer_s, 2),
    }
    if strong:
        t0 = time.perf_counter()
        model = fit_strong(tr_texts, tr_labels)
        row["strong_s"] = round(time.perf_counter() - t0, 2)
        row["strong"] = round(
            float(f1_score(te_labels, model.predict(te_texts), average="macro")), 4
        )
    return row


def summary(rows: list[dict], key: str) -> dict:
    values = [r[key] for r in rows]
    return {
        "mean": round(statistics.mean(values), 4),
        "min": min(values),
        "max": max(values),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0-9")
    parser.add_argument("--params", default="{}", help="training params as JSON")
    parser.add_argument("--data", choices=sorted(FILES), default="airline")
    parser.add_argument("--no-strong", action="store_true", help="skip the strong baseline")
    args = parser.parse_args()
    path = FILES[args.data]
    if not path.is_file():
        print(f"skipped: {path.name} not found in ../shared/data")
        return 0
    params = TrainParams.from_dict(json.loads(args.params))
    ds = read_dataset(path)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-splits-") as name:
        for seed in seeds_of(args.seeds):
            row = one_split(ds.texts, ds.labels, seed, params, Path(name), not args.no_strong)
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {
        "date": dt.date.today().isoformat(),
        "data": args.data,
        "rows": len(ds.texts),
        "params": params.to_dict(),
        "splits": rows,
        "trainer": summary(rows, "trainer"),
    }
    if not args.no_strong:
        result["strong"] = summary(rows, "strong")
    print(json.dumps({k: result[k] for k in ("trainer", "strong") if k in result}))
    out = HERE / f"splits-{args.data}-{result['date']}.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
