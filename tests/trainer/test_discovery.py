"""Finding the data file: first candidate that exists, and never a path outside the root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trainer.data import DataError
from trainer.discovery import DEFAULT_CANDIDATES, discover


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("text,label\n", encoding="utf-8")
    return path


def test_default_candidates_are_the_documented_three() -> None:
    assert DEFAULT_CANDIDATES == (
        "data/cleaned_training_sample.csv",
        "data/prod.csv",
        "data/train.csv",
    )


def test_first_existing_candidate_wins(tmp_path: Path) -> None:
    touch(tmp_path / "data" / "prod.csv")
    touch(tmp_path / "data" / "train.csv")
    found = discover(tmp_path)
    assert found.path == tmp_path / "data" / "prod.csv"
    assert found.candidate == "data/prod.csv"


def test_nothing_found_returns_no_path_and_lists_what_was_tried(tmp_path: Path) -> None:
    found = discover(tmp_path, ["a.csv", "b/c.csv"])
    assert found.path is None and found.tried == ("a.csv", "b/c.csv")


@pytest.mark.parametrize(
    "candidate", ["/etc/passwd", "C:\\data\\x.csv", "../outside.csv", "data/../../x.csv", ""]
)
def test_absolute_and_parent_paths_are_rejected(tmp_path: Path, candidate: str) -> None:
    with pytest.raises(DataError):
        discover(tmp_path, [candidate])


def test_a_symlink_resolving_outside_the_root_is_rejected(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    secret = touch(tmp_path / "secret.csv")
    (root / "data").mkdir(parents=True)
    os.symlink(secret, root / "data" / "train.csv")
    with pytest.raises(DataError, match="outside the data root"):
        discover(root, ["data/train.csv"])


def test_a_symlinked_directory_leading_outside_is_rejected(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    touch(tmp_path / "elsewhere" / "train.csv")
    os.symlink(tmp_path / "elsewhere", root / "data")
    with pytest.raises(DataError, match="outside the data root"):
        discover(root, ["data/train.csv"])


def test_a_symlink_inside_the_root_is_followed(tmp_path: Path) -> None:
    real = touch(tmp_path / "data" / "v2.csv")
    os.symlink(real, tmp_path / "data" / "train.csv")
    assert discover(tmp_path, ["data/train.csv"]).path == tmp_path / "data" / "train.csv"


def test_an_unsafe_later_candidate_fails_even_when_an_earlier_one_exists(tmp_path: Path) -> None:
    touch(tmp_path / "data" / "prod.csv")
    with pytest.raises(DataError, match=r"'\.\.'"):
        discover(tmp_path, ["data/prod.csv", "../x.csv"])


def test_a_candidate_that_is_a_directory_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "data" / "prod.csv").mkdir(parents=True)
    with pytest.raises(DataError, match="not a regular file"):
        discover(tmp_path, ["data/prod.csv"])


def test_a_root_that_is_not_a_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a directory"):
        discover(touch(tmp_path / "file.csv"))
