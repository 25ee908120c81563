"""trainhook's trainer: turns a labelled CSV into a text classifier and its artifacts.

A pure library with a CLI (`python -m trainer`). It imports nothing from the service, the
worker or trainhook, and needs no database or cloud client.

`TRAINER_VERSION` is part of the model cache key: bump it whenever a change alters what
training produces for the same data and params (preprocessing, features, defaults,
classifier, the artifact format), so that cached models are not reused across the change.

What a served model needs at load time lives in the separate `trainhook_runtime` package;
this one is needed only to train. The public names below are loaded on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

TRAINER_VERSION = "2.2.0"

_EXPORTS = {
    "train": "trainer.pipeline",
    "TrainResult": "trainer.pipeline",
    "TrainParams": "trainer.params",
    "ParamsError": "trainer.params",
    "DataError": "trainer.data",
    "read_dataset": "trainer.data",
    "discover": "trainer.discovery",
    "DEFAULT_CANDIDATES": "trainer.discovery",
    "decide": "trainer.gate",
    "GateDecision": "trainer.gate",
    "generate_sample": "trainer.sample",
    "NLTK_PACKAGES": "trainer.nltkdata",
    "NltkStatus": "trainer.nltkdata",
    "ensure_nltk_data": "trainer.nltkdata",
    "nltk_cache_key_material": "trainer.nltkdata",
    "OutputError": "trainer.artifacts",
}

__all__ = ["TRAINER_VERSION", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'trainer' has no attribute {name!r}")
    return getattr(import_module(module), name)
