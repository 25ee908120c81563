"""Training hyperparameters: one frozen dataclass, JSON-friendly, strict about unknown keys.

`TrainParams.to_dict()` is what the worker hashes into the model cache key (together with
`TRAINER_VERSION` and the data manifest), so every field that changes the trained model
belongs here, and nothing that does not (worker count, progress output, paths).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

CLASSIFIERS = ("auto", "linear_svc", "sgd", "logistic_regression")
HANDLE_MODES = ("placeholder", "strip", "keep")


class ParamsError(ValueError):
    """Invalid training parameters (unknown key, wrong type or out-of-range value)."""


@dataclass(frozen=True)
class TrainParams:
    """Hyperparameters of one training run; defaults are the tuned configuration."""

    text_column: str = "text"
    label_column: str = "label"
    sample_rows: int | None = None
    seed: int = 0
    validation_fraction: float = 0.2
    # Fit the shipped model on every usable row once the validation figures are taken (on
    # the held-out part, by a model fitted without it). False ships the model scored.
    refit: bool = True
    # Text normalisation.
    lowercase: bool = True
    handles: str = "placeholder"
    stem: bool = True
    stopwords: bool = False
    # Features.
    word_ngram_range: tuple[int, int] = (1, 2)
    char_ngram_range: tuple[int, int] | None = (2, 5)
    min_df: int = 2
    sublinear_tf: bool = True
    word_weight: float = 1.1
    char_weight: float = 1.0
    # Classifier. "auto": a linear SVM, by liblinear (LinearSVC) up to 10 M non-zeros in the
    # TF-IDF matrix and by SGD on float32 values above, where liblinear's own copy of the
    # matrix would double the memory (trainer.model.resolve_classifier).
    classifier: str = "auto"
    C: float = 0.1
    class_weight: str | None = "balanced"
    max_iter: int = 5000

    def __post_init__(self) -> None:
        self._check()

    def to_dict(self) -> dict[str, Any]:
        """Return the parameters as a JSON-serialisable dict (tuples become lists)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainParams:
        """Build params from a dict, defaults filling missing keys.

        Raises ParamsError for unknown keys, wrong types or invalid values.
        """
        if not isinstance(data, dict):
            raise ParamsError(f"params must be a JSON object, not {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ParamsError(f"unknown training parameter(s): {', '.join(unknown)}")
        values = {}
        for key, value in data.items():
            if key in ("word_ngram_range", "char_ngram_range") and isinstance(value, list):
                value = tuple(value)
            values[key] = value
        try:
            return cls(**values)
        except TypeError as exc:
            raise ParamsError(str(exc)) from exc

    def replace(self, **changes: Any) -> TrainParams:
        """Return a copy with `changes` applied (validated like the constructor)."""
        return dataclasses.replace(self, **changes)

    def _check(self) -> None:
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name), f.type)
        _require(self.text_column != self.label_column, "text_column and label_column differ")
        _require(self.sample_rows is None or self.sample_rows >= 2, "sample_rows >= 2")
        _require(0.0 < self.validation_fraction < 1.0, "0 < validation_fraction < 1")
        _require(self.handles in HANDLE_MODES, f"handles in {HANDLE_MODES}")
        low, high = self.word_ngram_range
        _require(1 <= low <= high <= 2, "word_ngram_range is [1, 1], [1, 2] or [2, 2]")
        if self.char_ngram_range is not None:
            low, high = self.char_ngram_range
            _require(
                1 <= low <= high <= 8, "char_ngram_range is [low, high], 1 <= low <= high <= 8"
            )
        _require(self.min_df >= 1, "min_df >= 1")
        _require(self.word_weight > 0 and self.char_weight > 0, "feature weights > 0")
        _require(self.classifier in CLASSIFIERS, f"classifier in {CLASSIFIERS}")
        _require(self.C > 0 and math.isfinite(self.C), "C > 0")
        _require(self.class_weight in (None, "balanced"), "class_weight is 'balanced' or null")
        _require(self.max_iter >= 1, "max_iter >= 1")


def load_params(spec: str | None) -> TrainParams:
    """Parse `--params`: inline JSON, or `@path` to a JSON file; None gives the defaults.

    Raises ParamsError on unreadable files, invalid JSON or invalid parameters.
    """
    if spec is None:
        return TrainParams()
    text = spec
    if spec.startswith("@"):
        try:
            text = Path(spec[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise ParamsError(f"cannot read params file {spec[1:]}: {exc.strerror}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParamsError(f"params are not valid JSON: {exc}") from exc
    return TrainParams.from_dict(data)


def _require(ok: bool, rule: str) -> None:
    if not ok:
        raise ParamsError(f"invalid training parameters: need {rule}")


_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "bool": (bool,),
    "int": (int,),
    "float": (int, float),
}


def _check_type(name: str, value: Any, annotation: Any) -> None:
    """Strict runtime check of the simple annotations used above (bool is not an int)."""
    spec = str(annotation).replace(" ", "")
    if spec.endswith("|None"):
        if value is None:
            return
        spec = spec[: -len("|None")]
    if spec == "tuple[int,int]":
        ok = (
            isinstance(value, tuple)
            and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        )
    else:
        ok = isinstance(value, _TYPES[spec]) and (spec == "bool" or not isinstance(value, bool))
        if ok and spec == "float":
            ok = math.isfinite(value)
    if not ok:
        raise ParamsError(f"training parameter {name!r} must be {spec}, not {value!r}")
