"""The model manifest (model_manifest.json) and loading a model directory with its checks.

A model directory holds `model.joblib` and `vectorizer.joblib` (the contract is
`model.predict(vectorizer.transform(texts))`) and `model_manifest.json`, which says what
loading them needs. `load_model` reads the manifest first and refuses, naming both versions,
when the installed scikit-learn or runtime cannot read the pickles, so a mismatch never
surfaces as a pickle traceback.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from trainhook_runtime.versions import (
    MANIFEST_FORMAT,
    RUNTIME_VERSION,
    IncompatibleModel,
    check_runtime_version,
    check_sklearn_version,
)

MODEL = "model.joblib"
VECTORIZER = "vectorizer.joblib"
MANIFEST = "model_manifest.json"
CONTRACT = "model.predict(vectorizer.transform(texts))"
# Distribution name -> the import name whose __version__ stands in when the distribution's
# metadata is missing (a vendored or unusual install).
_LIBRARIES = {
    "scikit-learn": "sklearn",
    "numpy": "numpy",
    "scipy": "scipy",
    "nltk": "nltk",
    "joblib": "joblib",
}


def installed_version(distribution: str) -> str:
    """The installed version of `distribution` ("absent" when it is not installed).

    Read from package metadata, so checking a manifest imports nothing heavy.
    """
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        pass
    try:
        module = __import__(_LIBRARIES.get(distribution, distribution))
    except ImportError:
        return "absent"
    return str(getattr(module, "__version__", "unknown"))


def library_versions() -> dict[str, str]:
    """Python and the libraries a served model loads with, as installed here."""
    versions = {name: installed_version(name) for name in _LIBRARIES}
    return {"python": platform.python_version(), **versions}


def make_manifest(
    labels: Iterable[str], trained_on_rows: int, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The manifest of a model trained here on `trained_on_rows` rows with classes `labels`."""
    return {
        "format": MANIFEST_FORMAT,
        "contract": CONTRACT,
        "runtime_version": RUNTIME_VERSION,
        "versions": library_versions(),
        "labels": sorted(str(label) for label in labels),
        "trained_on_rows": int(trained_on_rows),
        **dict(extra or {}),
    }


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest in `directory`. Raises FileNotFoundError or IncompatibleModel."""
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{MANIFEST} is missing from {directory}") from None
    except ValueError as exc:
        raise IncompatibleModel(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise IncompatibleModel(f"{path} is not a JSON object")
    return manifest


def check_manifest(manifest: Mapping[str, Any], sklearn_version: str | None = None) -> None:
    """Raise IncompatibleModel, naming both versions, unless this runtime and the installed
    scikit-learn (or `sklearn_version`) can load the model `manifest` describes."""
    fmt = manifest.get("format")
    if not isinstance(fmt, int) or fmt > MANIFEST_FORMAT:
        raise IncompatibleModel(
            f"{MANIFEST} has format {fmt!r}, and trainhook_runtime {RUNTIME_VERSION} reads "
            f"format {MANIFEST_FORMAT} at most: install a newer trainhook_runtime"
        )
    check_runtime_version(str(manifest.get("runtime_version", "0")), "the model")
    trained_with = str(manifest.get("versions", {}).get("scikit-learn", "unknown"))
    installed = sklearn_version or installed_version("scikit-learn")
    check_sklearn_version(trained_with, installed)


@dataclass(frozen=True)
class LoadedModel:
    """A loaded model directory: the two pickles and the manifest describing them."""

    model: Any
    vectorizer: Any
    manifest: dict[str, Any]

    def predict(self, texts: Sequence[str]) -> list[str]:
        """The label of each text, as strings."""
        return [str(label) for label in self.model.predict(self.vectorizer.transform(texts))]


def load_model(directory: str | Path) -> LoadedModel:
    """Load `directory`'s model after checking its manifest.

    Raises FileNotFoundError when a file is missing and IncompatibleModel when the installed
    scikit-learn or trainhook_runtime cannot load it (checked before anything is unpickled).
    """
    import joblib

    directory = Path(directory)
    missing = [name for name in (MODEL, VECTORIZER) if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)} missing from {directory}")
    manifest = read_manifest(directory)
    check_manifest(manifest)
    model = joblib.load(directory / MODEL)
    vectorizer = joblib.load(directory / VECTORIZER)
    return LoadedModel(model, vectorizer, manifest)
