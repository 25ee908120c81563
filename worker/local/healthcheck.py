"""The deploy health check, run in a child process: `python -I worker/local/healthcheck.py DIR`.

Loads DIR/model.joblib and DIR/vectorizer.joblib the way a served app does (through
`trainhook_runtime.load_model` when DIR/model_manifest.json is there, which checks it first,
so a library version mismatch is reported with both versions; a model without one, made
before manifests existed or outside the trainer, is unpickled as it is) and scores a few
texts with `model.predict(vectorizer.transform(texts))`. Prints one JSON line with the
labels and exits 0, or prints the problem on stderr and exits 1. A child process, because
unpickling may crash or hang the interpreter.

It never imports from the release: the release holds the repository's checkout, and
unpickling and scoring try optional imports (`bllipparser`, `pandas`, ...) that a committed
file of that name would answer. The worker runs it isolated (`-I`: no script or working
directory on sys.path, no PYTHON* variables) in a sandbox that holds only the model files,
and the `trainhook_runtime` package (which the pickles reference) comes from the worker's
installation.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import joblib

from trainhook_runtime import load_model
from trainhook_runtime.loading import MANIFEST, MODEL, VECTORIZER

PROBE_TEXTS = (
    "I love this, thank you so much!",
    "This is terrible, I hate it.",
    "The meeting is moved to 3pm on Thursday.",
)


def check(release: Path, texts: tuple[str, ...] = PROBE_TEXTS) -> list[str]:
    """The labels the release gives `texts`; raises on any problem."""
    if (release / MANIFEST).is_file():
        labels = load_model(release).predict(list(texts))
    else:
        for name in (MODEL, VECTORIZER):
            if not (release / name).is_file():
                raise FileNotFoundError(f"{name} is missing from the release")
        model, vectorizer = joblib.load(release / MODEL), joblib.load(release / VECTORIZER)
        labels = [str(label) for label in model.predict(vectorizer.transform(list(texts)))]
    if len(labels) != len(texts):
        raise ValueError(f"{len(texts)} texts gave {len(labels)} labels")
    return labels


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -I healthcheck.py RELEASE_DIR", file=sys.stderr)
        return 2
    try:
        labels = check(Path(argv[0]))
    except Exception as exc:
        print(f"health check failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"ok": True, "labels": labels}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
