"""One training run: data, NLTK data, features, classifier, metrics, artifacts."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer import TRAINER_VERSION
from trainer.artifacts import (
    FALLBACK_SAMPLE,
    check_output_dir,
    commit,
    discard,
    make_staging,
    write_artifacts,
)
from trainer.card import render_card
from trainer.data import DataError, Dataset, read_dataset
from trainer.discovery import DEFAULT_CANDIDATES, discover
from trainer.nltkdata import (
    NLTK_PACKAGES,
    NltkStatus,
    english_stopwords,
    ensure_nltk_data,
    find_nltk_data,
)
from trainer.params import TrainParams
from trainer.progress import Progress
from trainer.sample import generate_sample
from trainhook_runtime import RUNTIME_VERSION
from trainhook_runtime.loading import make_manifest

FALLBACK_ROWS = 3000


@dataclass(frozen=True)
class TrainResult:
    """What a run produced. `metrics` is the content of metrics.json."""

    out_dir: Path
    data_file: str
    fallback_used: bool
    metrics: dict[str, Any]
    notices: tuple[str, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def macro_f1(self) -> float:
        """Validation macro-F1."""
        return float(self.metrics["macro_f1"])

    def summary(self) -> dict[str, Any]:
        """The one-line JSON summary the CLI prints."""
        return {
            "data_file": self.data_file,
            "fallback_used": self.fallback_used,
            "rows": self.metrics["rows"],
            "macro_f1": self.macro_f1,
            "accuracy": self.metrics["accuracy"],
            "nltk_degraded": self.metrics["nltk"]["degraded"],
            "out_dir": str(self.out_dir),
        }


def default_workers() -> int:
    """Processes to use for preprocessing: the CPUs this process may run on, at most 2."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, min(2, cpus))


def train(
    data_path: str | Path,
    out_dir: str | Path,
    params: TrainParams | None = None,
    *,
    candidates: Sequence[str] = DEFAULT_CANDIDATES,
    nltk_data: str | Path | None = None,
    nltk_index: str | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Train on `data_path` (a CSV file, or a directory searched for `candidates`) and write
    model.joblib, vectorizer.joblib, metrics.json and model_card.md into `out_dir` atomically.

    Raises DataError for unusable data or unsafe data paths, OutputError when `out_dir`
    cannot receive the artifacts, ParamsError for invalid params.
    """
    started = time.perf_counter()
    params = params if params is not None else TrainParams()
    progress = progress if progress is not None else Progress.quiet()
    workers = workers if workers is not None else default_workers()
    out_dir = Path(out_dir)
    check_output_dir(out_dir)
    timings: dict[str, float] = {}

    @contextmanager
    def phase(name: str, label: str) -> Iterator[None]:
        progress.phase(label)
        t0 = time.perf_counter()
        yield
        timings[name] = round(time.perf_counter() - t0, 4)

    staging = make_staging(out_dir)
    try:
        notices: list[str] = []
        with phase("discover", "finding data"):
            data_file, found = _locate(Path(data_path), candidates, staging, out_dir, notices)
        with phase("read", "reading data"):
            ds = read_dataset(
                data_file,
                params.text_column,
                params.label_column,
                sample_rows=params.sample_rows,
                seed=params.seed,
                on_rows=progress.rows,
            )
        with phase("nltk", "checking NLTK data"):
            status = _nltk_status(params, nltk_data, nltk_index)
            stopwords, source = (
                english_stopwords(status) if params.stopwords else (frozenset(), None)
            )
            if status.degraded:
                missing = "; ".join(f"{k}: {v}" for k, v in status.missing.items())
                notices.append(f"NLTK data missing, using fallbacks ({missing})")
        with phase("libraries", "loading NLTK and scikit-learn"):
            # Imported only now: they take seconds to import, and the checks above should
            # fail fast without them.
            from trainer.features import count_features, fitted_tfidf, subset_idf
            from trainer.model import (
                CONCURRENT_FIT_MAX_NONZEROS,
                build_classifier,
                build_vectorizer,
                can_fork,
                evaluate,
                feature_dtype,
                fit_classifier,
                fit_predict_in_child,
                resolve_classifier,
                split,
                top_features,
            )

        with phase("split", "splitting"):
            try:
                train_idx, val_idx = split(ds.labels, params)
            except ValueError as exc:
                raise DataError(
                    ds.path, f"cannot make a stratified validation split: {exc}"
                ) from exc
        train_texts = [ds.texts[i] for i in train_idx]
        val_texts = [ds.texts[i] for i in val_idx]
        with phase("features", f"tokenising and vectorising ({workers} processes)"):
            vectorizer = build_vectorizer(params, stopwords)
            if params.refit:
                # Every row is tokenised and counted once, the training rows first; the
                # validation model's rows get the training rows' own document frequencies
                # (the columns a vectorizer fitted on them alone would have, the same idf),
                # which gives the same features as fitting a vectorizer on the training rows
                # (checked on the airline tweets: identical metrics). The refit then reuses
                # the counts instead of tokenising and counting again (200k rows: 2.0 GB
                # peak and 74 s before, see bench/README.md).
                counts = count_features(vectorizer, train_texts + val_texts, workers=workers)
                classifier = resolve_classifier(params, counts.matrix.nnz)
                dtype = feature_dtype(classifier)
                n_train = len(train_idx)
                idf = subset_idf(vectorizer, counts.document_frequency(0, n_train), n_train)
                x_train = counts.tfidf(vectorizer, 0, n_train, idf, dtype)
                x_val = counts.tfidf(vectorizer, n_train, counts.rows, idf, dtype)
            else:
                counts = count_features(
                    vectorizer, train_texts, workers=workers, pretokenise=val_texts
                )
                classifier = resolve_classifier(params, counts.matrix.nnz)
                x_train = fitted_tfidf(vectorizer, counts, feature_dtype(classifier))
                del counts
                x_val = vectorizer.transform(val_texts)
        del train_texts, val_texts
        train_labels = [ds.labels[i] for i in train_idx]
        # With few non-zeros the held-out model is fitted in a forked process while this one
        # does the refit: the two fits take the same time, and run on two cores instead of
        # one after the other (airline tweets: ~0.5 s of ~4 s). Big inputs fit one at a time
        # (two solver copies of the matrix at once would double the memory).
        concurrent = (
            params.refit
            and workers >= 2
            and x_train.nnz + x_val.nnz <= CONCURRENT_FIT_MAX_NONZEROS
            and can_fork()
        )
        with phase("fit", "fitting classifier"):
            model = build_classifier(params, classifier, len(train_idx))
            if concurrent:
                held_out = fit_predict_in_child(model, x_train, train_labels, x_val)
            else:
                held_out_notices = fit_classifier(model, x_train, train_labels)
                predicted = [str(p) for p in model.predict(x_val)]
        shipped_rows = len(train_idx)
        refit_notices: list[str] = []
        if params.refit:
            # The figures below describe a model that never saw the validation rows; the
            # model that ships learns from every usable row (a fifth more data), from the
            # counts made above: the vectorizer's vocabulary is already that of every row.
            with phase("refit", "refitting on all rows"):
                # The held-out fit's matrices are dropped first: kept alive through the refit
                # they raised the peak at 200k rows from 2.0 GB to 2.4 GB (measured).
                del x_train, x_val, model
                # liblinear's result depends on the rows' order: they go back in the file's
                # order. SGD visits them in a seeded shuffle every epoch, so it takes them
                # as counted (the reordering copy, 5 bytes a non-zero, was the refit's
                # memory peak at 200k rows). Then the counts' values are released: the
                # TF-IDF rows keep only their indices.
                if classifier == "sgd":
                    all_labels = [ds.labels[i] for i in [*train_idx, *val_idx]]
                else:
                    counts = counts.take_rows(_inverse([*train_idx, *val_idx]))
                    all_labels = list(ds.labels)
                # The idf of every row (their order does not change it).
                x_all = fitted_tfidf(vectorizer, counts, dtype)
                del counts
                model = build_classifier(params, classifier, len(ds.texts))
                refit_notices = fit_classifier(model, x_all, all_labels)
                shipped_rows = len(ds.texts)
                del x_all
        with phase("evaluate", "evaluating"):
            if concurrent:
                predicted, held_out_notices = held_out()
            notices.extend(held_out_notices)
            notices.extend(n for n in refit_notices if n not in held_out_notices)
            labels = sorted(set(ds.labels))
            scores = evaluate([ds.labels[i] for i in val_idx], predicted, labels)
        timings["total_before_write"] = round(time.perf_counter() - started, 4)
        metrics = {
            "schema": 1,
            "trainer_version": TRAINER_VERSION,
            **scores,
            "rows": _rows(ds, len(train_idx), len(val_idx), shipped_rows),
            "data": {**found, "sha256": ds.sha256, "class_counts": ds.class_counts},
            "params": params.to_dict(),
            # What "auto" became for this input (see trainer.model.resolve_classifier).
            "classifier": classifier,
            "features": _feature_counts(vectorizer),
            "nltk": {**status.to_dict(), "stopwords_source": source},
            "versions": library_versions(),
            "timings": dict(timings),
            "notices": notices,
        }
        with phase("write", "writing artifacts"):
            card = render_card(metrics, top_features(model, vectorizer))
            manifest = make_manifest(labels, shipped_rows, {"trainer_version": TRAINER_VERSION})
            write_artifacts(staging, model, vectorizer, metrics, card, manifest)
            commit(staging, out_dir)
    except BaseException:
        discard(staging)
        raise
    timings["total"] = round(time.perf_counter() - started, 4)
    return TrainResult(
        out_dir, found["file"], found["fallback"], metrics, tuple(notices), dict(timings)
    )


def _inverse(order: list[int]) -> list[int]:
    """The permutation that puts rows taken in `order` back where they came from."""
    back = [0] * len(order)
    for position, row in enumerate(order):
        back[row] = position
    return back


def _locate(
    data_path: Path, candidates: Sequence[str], staging: Path, out_dir: Path, notices: list[str]
) -> tuple[Path, dict[str, Any]]:
    """The file to read, and the "data" section of the metrics describing it."""
    if data_path.is_file():
        return data_path, {"file": str(data_path), "fallback": False, "candidates": None}
    if not data_path.exists():
        raise DataError(data_path, "data path does not exist")
    found = discover(data_path, candidates)
    if found.path is not None:
        info = {"file": str(found.path), "fallback": False, "candidates": list(found.tried)}
        return found.path, info
    generated = generate_sample(staging / FALLBACK_SAMPLE, rows=FALLBACK_ROWS, seed=0)
    final = out_dir / FALLBACK_SAMPLE
    notices.append(
        f"FALLBACK: no data file found in {data_path} (tried {', '.join(found.tried)}); "
        f"trained on a GENERATED sample dataset ({FALLBACK_ROWS} rows, seed 0) saved as {final}"
    )
    return generated, {"file": str(final), "fallback": True, "candidates": list(found.tried)}


def _nltk_status(
    params: TrainParams, directory: str | Path | None, index: str | None
) -> NltkStatus:
    if not params.stopwords:
        return NltkStatus(str(directory) if directory else None, ())
    if directory is not None:
        return ensure_nltk_data(NLTK_PACKAGES, directory, index)
    return find_nltk_data(NLTK_PACKAGES)


def _rows(ds: Dataset, train: int, validation: int, shipped: int) -> dict[str, Any]:
    return {
        "read": ds.rows_read,
        "used": len(ds.texts),
        "dropped": dict(sorted(ds.dropped.items())),
        "dropped_example_lines": dict(sorted(ds.dropped_lines.items())),
        "sampled_out": ds.sampled_out,
        "train": train,
        "validation": validation,
        # The rows the shipped model was fitted on: all used rows after a refit, else train.
        "shipped_model": shipped,
    }


def _feature_counts(vectorizer: Any) -> dict[str, int]:
    word = len(vectorizer.word_terms())
    char = len(getattr(vectorizer, "char_index_", {}))
    return {"word": word, "char": char, "total": word + char}


def library_versions() -> dict[str, str]:
    """Versions of Python, the libraries the model depends on, and the trainer."""
    import nltk
    import numpy
    import scipy
    import sklearn

    return {
        "python": platform.python_version(),
        "nltk": nltk.__version__,
        "sklearn": sklearn.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "trainer": TRAINER_VERSION,
        "trainhook_runtime": RUNTIME_VERSION,
    }
