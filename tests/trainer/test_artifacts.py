"""Artifact sets reach the output directory whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.artifacts import OutputError, check_output_dir, commit, make_staging


def staged(out: Path, marker: str) -> Path:
    staging = make_staging(out)
    for name in ("model.joblib", "vectorizer.joblib", "metrics.json", "model_card.md"):
        (staging / name).write_text(marker, encoding="utf-8")
    return staging


def contents(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in folder.iterdir()}


def test_a_new_output_directory_receives_the_whole_set(tmp_path: Path) -> None:
    out = tmp_path / "out"
    commit(staged(out, "v1"), out)
    assert set(contents(out).values()) == {"v1"} and len(contents(out)) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging left


def test_an_existing_set_is_replaced_as_a_whole(tmp_path: Path) -> None:
    out = tmp_path / "out"
    commit(staged(out, "v1"), out)
    (out / "fallback_sample.csv").write_text("old", encoding="utf-8")
    commit(staged(out, "v2"), out)
    assert contents(out) == dict.fromkeys(
        ("model.joblib", "vectorizer.joblib", "metrics.json", "model_card.md"), "v2"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_empty_existing_directory_is_used(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    commit(staged(out, "v1"), out)
    assert len(contents(out)) == 4


def test_a_directory_with_foreign_files_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(OutputError, match=r"notes\.txt"):
        check_output_dir(out)
    with pytest.raises(OutputError):
        commit(staged(out, "v1"), out)
    assert contents(out) == {"notes.txt": "mine"}


def test_an_output_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("x", encoding="utf-8")
    with pytest.raises(OutputError, match="not a directory"):
        check_output_dir(tmp_path / "out")
