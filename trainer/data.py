"""Reading and preparing a labelled CSV: validation, cleaning, counting and sampling.

Standard library only. Every row that is not used is counted under a reason; problems that
make the whole file unusable raise `DataError` naming the file, the line and the problem.
"""

from __future__ import annotations

import csv
import hashlib
import io
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

# Reasons a row is dropped, in the order they are checked.
BLANK_LINE = "blank_line"
WRONG_FIELD_COUNT = "wrong_field_count"
EMPTY_TEXT = "empty_text"
EMPTY_LABEL = "empty_label"
DUPLICATE_TEXT = "duplicate_text"
DUPLICATE_CONFLICTING_LABEL = "duplicate_text_conflicting_label"
MIN_ROWS_PER_CLASS = 2


class DataError(Exception):
    """The training data cannot be used. `file`, `line` (or None) and `problem` say why."""

    def __init__(self, file: str | Path, problem: str, line: int | None = None) -> None:
        self.file = str(file)
        self.line = line
        self.problem = problem
        where = self.file if line is None else f"{self.file}, line {line}"
        super().__init__(f"{where}: {problem}")


@dataclass
class Dataset:
    """Prepared rows plus the accounting of everything that was read."""

    path: Path
    texts: list[str]
    labels: list[str]
    lines: list[int]
    rows_read: int
    dropped: dict[str, int] = field(default_factory=dict)
    dropped_lines: dict[str, list[int]] = field(default_factory=dict)
    sampled_out: int = 0
    sha256: str = ""

    @property
    def class_counts(self) -> dict[str, int]:
        """Rows per label, labels sorted."""
        return dict(sorted(Counter(self.labels).items()))


def read_dataset(
    path: str | Path,
    text_column: str = "text",
    label_column: str = "label",
    *,
    sample_rows: int | None = None,
    seed: int = 0,
    on_rows: Callable[[int], None] | None = None,
) -> Dataset:
    """Read a UTF-8 CSV and return its usable rows, deduplicated and whitespace-normalised.

    Optionally keeps a deterministic stratified sample of `sample_rows` rows (seeded).
    `on_rows(n)` is called now and then with the number of rows read so far.
    Raises DataError for unreadable or undecodable files, a missing column, no usable rows,
    a single class, or a class with fewer than two rows.
    """
    path = Path(path)
    text = _decode(path)
    reader = csv.reader(io.StringIO(text, newline=""))
    header, text_at, label_at = _header(path, reader, text_column, label_column)
    ds = Dataset(path=path, texts=[], labels=[], lines=[], rows_read=0)
    ds.sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
    first_label: dict[str, str] = {}
    line = reader.line_num + 1
    try:
        for row in reader:
            ds.rows_read += 1
            reason, clean_text, label = _check_row(row, len(header), text_at, label_at)
            if reason is None:
                kept = first_label.get(clean_text)
                if kept is not None:
                    reason = DUPLICATE_TEXT if kept == label else DUPLICATE_CONFLICTING_LABEL
            if reason is None:
                first_label[clean_text] = label
                ds.texts.append(clean_text)
                ds.labels.append(label)
                ds.lines.append(line)
            else:
                ds.dropped[reason] = ds.dropped.get(reason, 0) + 1
                examples = ds.dropped_lines.setdefault(reason, [])
                if len(examples) < 5:
                    examples.append(line)
            if on_rows is not None and ds.rows_read % 5000 == 0:
                on_rows(ds.rows_read)
            line = reader.line_num + 1
    except csv.Error as exc:
        raise DataError(path, f"malformed CSV: {exc}", reader.line_num or line) from exc
    if on_rows is not None:
        on_rows(ds.rows_read)
    _check_usable(ds)
    if sample_rows is not None and sample_rows < len(ds.texts):
        _sample(ds, sample_rows, seed)
    return ds


def _decode(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(path, f"cannot read file: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        bad = raw[exc.start : exc.start + 1].hex()
        raise DataError(
            path, f"not valid UTF-8 (byte 0x{bad} at offset {exc.start})", line
        ) from exc
    return text.removeprefix("\ufeff")


def _header(
    path: Path, reader: Iterator[list[str]], text_column: str, label_column: str
) -> tuple[list[str], int, int]:
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise DataError(path, f"malformed CSV header: {exc}", 1) from exc
    if not header:
        raise DataError(path, "file is empty: expected a header line", 1)
    names = [name.strip() for name in header]
    positions = []
    for wanted in (text_column, label_column):
        count = names.count(wanted)
        if count == 0:
            raise DataError(path, f"missing column {wanted!r} (columns: {', '.join(names)})", 1)
        if count > 1:
            raise DataError(path, f"column {wanted!r} appears {count} times in the header", 1)
        positions.append(names.index(wanted))
    return names, positions[0], positions[1]


def _check_row(
    row: list[str], width: int, text_at: int, label_at: int
) -> tuple[str | None, str, str]:
    """(drop reason or None, normalised text, label) for one CSV record."""
    if not row:
        return BLANK_LINE, "", ""
    if len(row) != width:
        return WRONG_FIELD_COUNT, "", ""
    clean_text = " ".join(row[text_at].split())
    if not clean_text:
        return EMPTY_TEXT, "", ""
    label = row[label_at].strip()
    if not label:
        return EMPTY_LABEL, "", ""
    return None, clean_text, label


def _check_usable(ds: Dataset) -> None:
    if not ds.texts:
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(ds.dropped.items())) or "no data rows"
        raise DataError(ds.path, f"no usable rows ({ds.rows_read} read; {detail})")
    counts = Counter(ds.labels)
    if len(counts) < 2:
        (label,) = counts
        raise DataError(
            ds.path, f"only one class ({label!r}) in {len(ds.texts)} usable rows; need two or more"
        )
    for label, count in sorted(counts.items()):
        if count < MIN_ROWS_PER_CLASS:
            line = ds.lines[ds.labels.index(label)]
            raise DataError(
                ds.path,
                f"class {label!r} has only {count} usable row; each class needs at least "
                f"{MIN_ROWS_PER_CLASS} for a stratified validation split",
                line,
            )


def stratified_sample(labels: list[str], size: int, seed: int) -> list[int]:
    """Indices (ascending) of a deterministic stratified sample of `size` rows.

    Each class gets its proportional share (largest remainders), but at least two rows.
    Raises ValueError if `size` cannot hold two rows of every class.
    """
    by_class: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    classes = sorted(by_class)
    if size < MIN_ROWS_PER_CLASS * len(classes):
        raise ValueError(
            f"a sample of {size} rows cannot hold 2 rows of each of {len(classes)} classes"
        )
    total = len(labels)
    exact = {c: size * len(by_class[c]) / total for c in classes}
    quota = {c: max(MIN_ROWS_PER_CLASS, int(exact[c])) for c in classes}
    by_remainder = sorted(classes, key=lambda c: (-(exact[c] - int(exact[c])), c))
    while sum(quota.values()) < size:
        for c in by_remainder:
            if sum(quota.values()) < size and quota[c] < len(by_class[c]):
                quota[c] += 1
    while sum(quota.values()) > size:
        biggest = max(classes, key=lambda c: (quota[c], c))
        quota[biggest] -= 1
    rng = random.Random(seed)
    chosen: list[int] = []
    for c in classes:
        chosen.extend(rng.sample(by_class[c], quota[c]))
    return sorted(chosen)


def _sample(ds: Dataset, size: int, seed: int) -> None:
    try:
        keep = stratified_sample(ds.labels, size, seed)
    except ValueError as exc:
        raise DataError(ds.path, f"cannot sample {size} rows: {exc}") from exc
    ds.sampled_out = len(ds.texts) - len(keep)
    ds.texts = [ds.texts[i] for i in keep]
    ds.labels = [ds.labels[i] for i in keep]
    ds.lines = [ds.lines[i] for i in keep]
