"""Training parameters: frozen, JSON round trip, strict about unknown keys and bad values."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from trainer.params import ParamsError, TrainParams, load_params


def test_params_round_trip_through_json() -> None:
    params = TrainParams(C=0.5, char_ngram_range=(3, 4), sample_rows=100)
    data = json.loads(json.dumps(params.to_dict()))
    assert TrainParams.from_dict(data) == params
    assert data["char_ngram_range"] == [3, 4]


def test_defaults_fill_missing_keys() -> None:
    assert TrainParams.from_dict({"C": 1.0}) == TrainParams(C=1.0)


def test_params_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainParams().C = 2.0  # type: ignore[misc]


def test_unknown_keys_are_an_error_naming_them() -> None:
    with pytest.raises(ParamsError, match=r"unknown training parameter.*colour, size"):
        TrainParams.from_dict({"size": 1, "colour": "red"})


@pytest.mark.parametrize(
    "data",
    [
        {"C": "1"},
        {"C": 0},
        {"min_df": 1.5},
        {"stem": 1},
        {"seed": True},
        {"validation_fraction": 1.0},
        {"classifier": "forest"},
        {"handles": "drop"},
        {"word_ngram_range": [1, 3]},
        {"char_ngram_range": [5, 2]},
        {"class_weight": "auto"},
        {"text_column": "label"},
        {"C": float("nan")},
        {"refit": "yes"},
        {"refit": 1},
        {"refit": None},
    ],
)
def test_invalid_values_are_an_error(data: dict) -> None:
    with pytest.raises(ParamsError):
        TrainParams.from_dict(data)


def test_char_ngrams_can_be_switched_off() -> None:
    assert TrainParams.from_dict({"char_ngram_range": None}).char_ngram_range is None


def test_load_params_reads_inline_json_and_at_files(tmp_path: Path) -> None:
    assert load_params('{"C": 0.3}').C == 0.3
    (tmp_path / "p.json").write_text('{"min_df": 3}', encoding="utf-8")
    assert load_params(f"@{tmp_path / 'p.json'}").min_df == 3
    assert load_params(None) == TrainParams()


@pytest.mark.parametrize("spec", ["{not json", "[1, 2]", "@/nonexistent/params.json"])
def test_load_params_reports_bad_input(spec: str) -> None:
    with pytest.raises(ParamsError):
        load_params(spec)


def test_refit_is_on_by_default_and_part_of_the_hashed_params() -> None:
    assert TrainParams().refit is True
    assert TrainParams().to_dict()["refit"] is True
    assert TrainParams.from_dict({"refit": False}).to_dict()["refit"] is False
