"""Reading and preparing CSV data: cleaning, counting by reason, clear errors, sampling."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.trainer.conftest import WriteCsv
from trainer.data import DataError, read_dataset, stratified_sample

HEADER = ["text", "label"]


def test_duplicate_texts_are_dropped_and_counted(write_csv: WriteCsv) -> None:
    path = write_csv(
        [HEADER, ["good", "pos"], ["bad", "neg"], ["good", "pos"], ["fine", "pos"], ["no", "neg"]]
    )
    ds = read_dataset(path)
    assert ds.texts == ["good", "bad", "fine", "no"]
    assert ds.dropped == {"duplicate_text": 1}
    assert ds.dropped_lines == {"duplicate_text": [4]}


def test_duplicates_with_another_label_are_counted_under_their_own_reason(
    write_csv: WriteCsv,
) -> None:
    rows = [["ok", "pos"], ["meh", "neg"], ["ok", "neg"], ["meh", "neg"], ["yes", "pos"]]
    ds = read_dataset(write_csv([HEADER, *rows, ["nah", "neg"]]))
    assert ds.labels == ["pos", "neg", "pos", "neg"]  # the first occurrence wins
    assert ds.dropped == {"duplicate_text": 1, "duplicate_text_conflicting_label": 1}


def test_whitespace_is_normalised_before_duplicates_are_found(write_csv: WriteCsv) -> None:
    rows = [["  so\tgood \n flight ", "p"], ["so good flight", "p"], ["x", "n"], ["y", "n"]]
    ds = read_dataset(write_csv([HEADER, *rows, ["z", "p"]]))
    assert ds.texts == ["so good flight", "x", "y", "z"]
    assert ds.dropped == {"duplicate_text": 1}


def test_empty_texts_labels_and_malformed_rows_are_counted_not_silently_dropped(
    tmp_path: Path,
) -> None:
    path = tmp_path / "messy.csv"
    path.write_text(
        "text,label\r\n"
        "fine,a\r\n"
        "   ,a\r\n"  # empty text after normalisation
        "no label,\r\n"
        "too,many,fields\r\n"
        "\r\n"  # blank line
        "other,b\r\n"
        "more,a\r\n"
        "again,b\r\n",
        encoding="utf-8",
    )
    ds = read_dataset(path)
    assert ds.texts == ["fine", "other", "more", "again"]
    assert ds.rows_read == 8
    assert ds.dropped == {
        "empty_text": 1,
        "empty_label": 1,
        "wrong_field_count": 1,
        "blank_line": 1,
    }
    assert ds.dropped_lines["wrong_field_count"] == [5]


def test_line_numbers_count_newlines_inside_quoted_fields(write_csv: WriteCsv) -> None:
    rows = [["two\nlines", "a"], ["b text", "b"], ["two lines", "a"], ["c", "a"], ["d", "b"]]
    ds = read_dataset(write_csv([HEADER, *rows]))
    assert ds.lines == [2, 4, 6, 7]
    assert ds.dropped_lines == {"duplicate_text": [5]}


def test_column_names_are_configurable(write_csv: WriteCsv) -> None:
    rows = [["1", "hi", "p"], ["2", "bye", "n"], ["3", "yo", "p"], ["4", "ciao", "n"]]
    ds = read_dataset(write_csv([["id", "tweet", "sentiment"], *rows]), "tweet", "sentiment")
    assert (ds.texts[:2], ds.labels[:2]) == (["hi", "bye"], ["p", "n"])


def test_utf8_bom_and_lf_line_ends_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufefftext,label\ncafé ☕,a\nthé,b\nmore,a\nbis,b\n".encode())
    assert read_dataset(path).texts == ["café ☕", "thé", "more", "bis"]


def test_missing_column_error_names_the_file_line_and_columns(write_csv: WriteCsv) -> None:
    path = write_csv([["body", "label"], ["x", "a"]])
    with pytest.raises(DataError) as err:
        read_dataset(path)
    assert (err.value.file, err.value.line) == (str(path), 1)
    assert "missing column 'text'" in str(err.value) and "body, label" in str(err.value)
    assert str(path) in str(err.value) and "line 1" in str(err.value)


def test_undecodable_bytes_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"text,label\r\nfine,a\r\ncaf\xe9,b\r\n")
    with pytest.raises(DataError) as err:
        read_dataset(path)
    assert err.value.line == 3
    assert "not valid UTF-8" in err.value.problem and "0xe9" in err.value.problem


def test_a_single_class_is_a_data_error(write_csv: WriteCsv) -> None:
    path = write_csv([HEADER, ["a", "pos"], ["b", "pos"]])
    with pytest.raises(DataError, match=r"only one class \('pos'\)"):
        read_dataset(path)


def test_a_file_without_usable_rows_is_a_data_error_listing_the_reasons(
    write_csv: WriteCsv,
) -> None:
    path = write_csv([HEADER, ["", "a"], ["x", ""]])
    with pytest.raises(DataError, match=r"no usable rows .*empty_label: 1, empty_text: 1"):
        read_dataset(path)


def test_an_empty_file_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        read_dataset(path)


def test_a_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read file"):
        read_dataset(tmp_path / "nope.csv")


def test_a_class_with_one_row_is_a_data_error_naming_its_line(write_csv: WriteCsv) -> None:
    path = write_csv([HEADER, ["a", "x"], ["b", "x"], ["c", "rare"]])
    with pytest.raises(DataError) as err:
        read_dataset(path)
    assert err.value.line == 4 and "'rare' has only 1 usable row" in err.value.problem


def test_sampling_is_deterministic_stratified_and_counted(sample_csv: Path) -> None:
    full = read_dataset(sample_csv)
    one = read_dataset(sample_csv, sample_rows=200, seed=3)
    again = read_dataset(sample_csv, sample_rows=200, seed=3)
    other = read_dataset(sample_csv, sample_rows=200, seed=4)
    assert one.texts == again.texts and one.texts != other.texts
    assert len(one.texts) == 200 and one.sampled_out == len(full.texts) - 200
    for label, count in Counter(full.labels).items():
        share = count / len(full.labels) * 200
        assert abs(one.labels.count(label) - share) <= 1
    assert set(one.lines) <= set(full.lines)


def test_sampling_keeps_two_rows_of_a_rare_class() -> None:
    labels = ["big"] * 98 + ["rare"] * 2
    chosen = stratified_sample(labels, 10, seed=0)
    assert len(chosen) == 10 and [labels[i] for i in chosen].count("rare") == 2


def test_sampling_too_few_rows_for_the_classes_is_a_data_error(sample_csv: Path) -> None:
    with pytest.raises(DataError, match="cannot sample 5 rows"):
        read_dataset(sample_csv, sample_rows=5)


rows_strategy = st.lists(
    st.tuples(
        st.sampled_from(["", " ", "a", "b b", "a", "c\nd", "é", "x,y", '"q"']),
        st.sampled_from(["", "p", "n", "m"]),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(rows=rows_strategy, sample=st.one_of(st.none(), st.integers(2, 12)))
def test_every_row_read_is_used_dropped_or_sampled_out(
    tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[str, str]], sample: int | None
) -> None:
    import csv

    path = tmp_path_factory.mktemp("prop") / "rows.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([HEADER, *rows])
    try:
        ds = read_dataset(path, sample_rows=sample)
    except DataError:
        return  # unusable files are errors, not silent losses
    assert ds.rows_read == len(rows)
    assert ds.rows_read == len(ds.texts) + sum(ds.dropped.values()) + ds.sampled_out
    assert len(set(ds.texts)) == len(ds.texts)
