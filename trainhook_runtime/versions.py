"""Which runtime and scikit-learn versions can load a model, and the error when they cannot.

Standard library only: it is imported while a vectorizer is unpickled.
"""

from __future__ import annotations

# The package version. Its major number changes whenever a pickled TweetVectorizer or the
# manifest stops loading in the previous release; a model loads only with the same major.
RUNTIME_VERSION = "1.0.0"
# The manifest's own format (model_manifest.json "format").
MANIFEST_FORMAT = 1


class IncompatibleModel(RuntimeError):
    """The model was made for other library versions than the ones installed here."""


def _release(version: str, parts: int) -> tuple[str, ...]:
    return tuple(version.split("+")[0].split(".")[:parts])


def check_runtime_version(made_by: str, what: str) -> None:
    """Raise IncompatibleModel naming both versions unless `made_by` (the trainhook_runtime
    version that wrote `what`) has this runtime's major version."""
    if _release(made_by, 1) != _release(RUNTIME_VERSION, 1):
        major = _release(made_by, 1)[0]
        raise IncompatibleModel(
            f"{what} was written by trainhook_runtime {made_by}, and this is trainhook_runtime "
            f"{RUNTIME_VERSION}: install trainhook_runtime {major}.x beside the model, or "
            "retrain it with this runtime"
        )


def check_sklearn_version(trained_with: str, installed: str) -> None:
    """Raise IncompatibleModel naming both versions unless they share major.minor.

    scikit-learn pickles are not portable across minor versions (its documentation says so;
    an estimator's private attributes change between them), so a mismatch is refused before
    unpickling rather than risking wrong predictions or an AttributeError at serving time.
    """
    if _release(trained_with, 2) != _release(installed, 2):
        wanted = ".".join(_release(trained_with, 2))
        raise IncompatibleModel(
            f"the model was trained with scikit-learn {trained_with}, and scikit-learn "
            f"{installed} is installed: install scikit-learn=={wanted}.* to serve it, or "
            "retrain it with the installed version"
        )
