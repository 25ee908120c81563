"""trainhook_runtime: what a model trained by trainhook needs at serving time.

The normaliser and vectorizer classes the pickled `vectorizer.joblib` references
(`trainhook_runtime.text`), the sparse TF-IDF arithmetic they use (`.tfidf`) and the model
manifest with its version checks (`.loading`, `.versions`). It depends only on numpy, scipy,
scikit-learn and nltk (joblib comes with scikit-learn), imports nothing of trainhook, and is
named so that no user's package shadows it or is shadowed by it: builders ship it beside the
model as a `trainhook_runtime/` directory.

    from trainhook_runtime import load_model
    model = load_model("path/to/model-dir")   # checks model_manifest.json first
    model.predict(["thanks, great flight!"])

Importing the package is cheap; the names below are loaded on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from trainhook_runtime.versions import RUNTIME_VERSION, IncompatibleModel

_EXPORTS = {
    "load_model": "trainhook_runtime.loading",
    "LoadedModel": "trainhook_runtime.loading",
    "read_manifest": "trainhook_runtime.loading",
    "check_manifest": "trainhook_runtime.loading",
    "MANIFEST": "trainhook_runtime.loading",
    "TweetNormalizer": "trainhook_runtime.text",
    "TweetVectorizer": "trainhook_runtime.text",
}

__all__ = ["RUNTIME_VERSION", "IncompatibleModel", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'trainhook_runtime' has no attribute {name!r}")
    return getattr(import_module(module), name)
