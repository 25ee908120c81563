"""The synthetic sample generator: deterministic, tweet-like, three classes."""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import pytest

from trainer.sample import LABELS, generate_sample


def rows_of(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_same_rows_and_seed_give_identical_bytes(tmp_path: Path) -> None:
    a = generate_sample(tmp_path / "a.csv", rows=300, seed=7).read_bytes()
    b = generate_sample(tmp_path / "b.csv", rows=300, seed=7).read_bytes()
    c = generate_sample(tmp_path / "c.csv", rows=300, seed=8).read_bytes()
    assert a == b and a != c


def test_sample_is_a_text_label_csv_with_three_balanced_classes(tmp_path: Path) -> None:
    rows = rows_of(generate_sample(tmp_path / "s.csv", rows=3000))
    assert len(rows) == 3000 and set(rows[0]) == {"text", "label"}
    counts = Counter(row["label"] for row in rows)
    assert set(counts) == set(LABELS) and min(counts.values()) > 850


def test_sample_texts_look_like_tweets(tmp_path: Path) -> None:
    texts = [row["text"] for row in rows_of(generate_sample(tmp_path / "s.csv", rows=2000))]

    def share(pattern: str) -> float:
        return sum(bool(re.search(pattern, t)) for t in texts) / len(texts)

    assert share(r"^@\w+") == 1.0  # addressed to an airline
    assert share(r"https?://") > 0.1
    assert share(r"(^|\s)#\w+") > 0.2
    assert share(r"(\w)\1\1") > 0.05  # elongated words
    assert share(r"[😊😡🙌]|:\)|:\(|:D") > 0.05
    assert len(set(texts)) > 0.9 * len(texts)


def test_the_writer_replaces_the_file_atomically(tmp_path: Path) -> None:
    path = generate_sample(tmp_path / "data" / "s.csv", rows=10)
    generate_sample(path, rows=20)
    assert len(rows_of(path)) == 20
    assert [p.name for p in path.parent.iterdir()] == ["s.csv"]  # no temporary files left


def test_zero_rows_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate_sample(tmp_path / "s.csv", rows=0)
