"""social-score-api: a tiny HTTP service that labels short social-media texts.

The model is trained by trainhook from ``data/cleaned_training_sample.csv`` and
shipped next to this file as ``model.joblib`` + ``vectorizer.joblib`` +
``model_manifest.json`` (plus ``metrics.json``), with the ``trainhook_runtime``
package its vectorizer needs. Set ``MODEL_DIR`` to load them from elsewhere.

Prediction is exactly ``model.predict(vectorizer.transform(texts))``.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import joblib
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

APP_DIR = Path(__file__).resolve().parent
MODEL_FILE = "model.joblib"
VECTORIZER_FILE = "vectorizer.joblib"
METRICS_FILE = "metrics.json"
MANIFEST_FILE = "model_manifest.json"
MAX_TEXTS = 1000
MAX_BODY_BYTES = 5 * 1024 * 1024


def default_model_dir() -> Path:
    """``$MODEL_DIR`` if set, else the directory containing this file."""
    return Path(os.environ.get("MODEL_DIR") or APP_DIR)


def load_model(model_dir: str | os.PathLike[str]) -> tuple[Any, Any]:
    """Load ``(model, vectorizer)`` from ``model_dir``.

    A model trained by trainhook has a ``model_manifest.json``: it is loaded with
    ``trainhook_runtime.load_model`` (the package trainhook ships beside the
    model, importable like any package of the app), which refuses an
    incompatible scikit-learn or runtime with both versions named instead of
    failing inside unpickling. Without a manifest (e.g. the tests' own model)
    the two pickles are loaded as they are. Raises ``FileNotFoundError`` if a
    file is missing.
    """
    model_dir = Path(model_dir)
    paths = [model_dir / MODEL_FILE, model_dir / VECTORIZER_FILE]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"missing {', '.join(missing)} in {model_dir}")
    if (model_dir / MANIFEST_FILE).is_file():
        from trainhook_runtime import load_model as load_trained

        loaded = load_trained(model_dir)
        return loaded.model, loaded.vectorizer
    return joblib.load(paths[0]), joblib.load(paths[1])


def score(texts: Iterable[str], model: Any, vectorizer: Any) -> list[str]:
    """Label each text: ``model.predict(vectorizer.transform(texts))`` as strings."""
    return [str(label) for label in model.predict(vectorizer.transform(list(texts)))]


def describe_model(model_dir: str | os.PathLike[str], model: Any = None) -> str:
    """One-line description from ``metrics.json`` (trainer/data info), if present."""
    parts: list[str] = []
    try:
        metrics = json.loads((Path(model_dir) / METRICS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        metrics = None
    if isinstance(metrics, dict):
        for key in ("trainer", "data"):
            value = metrics.get(key)
            if value in (None, "", {}, []):
                continue
            if not isinstance(value, str):
                value = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
            parts.append(f"{key}={value}")
    if not parts and model is not None:
        parts.append(type(model).__name__)
    return " ".join(parts) or "unknown"


class ModelHolder:
    """Loads the model once (lazily, thread-safe); retries after a failure."""

    def __init__(self, model_dir: str | os.PathLike[str] | None = None) -> None:
        self._model_dir = Path(model_dir) if model_dir is not None else None
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Any, str] | None = None

    @property
    def model_dir(self) -> Path:
        return self._model_dir if self._model_dir is not None else default_model_dir()

    def get(self) -> tuple[Any, Any, str]:
        """Return ``(model, vectorizer, description)``; raises if they cannot be loaded."""
        if self._loaded is None:
            with self._lock:
                if self._loaded is None:
                    model_dir = self.model_dir
                    model, vectorizer = load_model(model_dir)
                    self._loaded = (model, vectorizer, describe_model(model_dir, model))
        return self._loaded


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _parse_texts(payload: Any) -> list[str] | str:
    """Return the validated texts, or an error message."""
    if not isinstance(payload, dict):
        return 'request body must be a JSON object like {"texts": ["..."]}'
    if "texts" not in payload:
        return 'missing "texts": expected {"texts": ["..."]}'
    texts = payload["texts"]
    if not isinstance(texts, list):
        return '"texts" must be a list of strings'
    if not texts:
        return '"texts" must not be empty'
    if len(texts) > MAX_TEXTS:
        return f"too many texts: {len(texts)} (at most {MAX_TEXTS} per request)"
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        return f'"texts" must contain only strings (bad item at index {bad[0]})'
    return texts


def create_app(model_dir: str | os.PathLike[str] | None = None) -> Starlette:
    """Build the app. ``model_dir`` defaults to ``$MODEL_DIR`` or this file's directory."""
    holder = ModelHolder(model_dir)

    async def load_or_none() -> tuple[Any, Any, str] | Exception:
        try:
            return await run_in_threadpool(holder.get)
        except Exception as exc:  # missing files, unpickling errors, ...
            return exc

    async def index(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "name": "social-score-api",
                "description": "Labels short social-media texts with a model trained by trainhook.",
                "endpoints": {
                    "POST /predict": '{"texts": ["..."]} -> {"labels": ["..."]}',
                    "GET /healthz": "200 when the model is loaded, 503 otherwise",
                },
            }
        )

    async def healthz(request: Request) -> JSONResponse:
        loaded = await load_or_none()
        if isinstance(loaded, Exception):
            return JSONResponse(
                {"status": "unavailable", "error": f"model not loaded: {loaded}"},
                status_code=503,
            )
        return JSONResponse({"status": "ok", "model": loaded[2]})

    async def predict(request: Request) -> JSONResponse:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            return _error(413, f"request body too large (limit {MAX_BODY_BYTES} bytes)")
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return _error(413, f"request body too large (limit {MAX_BODY_BYTES} bytes)")
        try:
            payload = json.loads(body)
        except ValueError:
            return _error(400, 'invalid JSON body: expected {"texts": ["..."]}')
        texts = _parse_texts(payload)
        if isinstance(texts, str):
            return _error(400, texts)
        loaded = await load_or_none()
        if isinstance(loaded, Exception):
            return _error(503, f"model not loaded: {loaded}")
        model, vectorizer, _ = loaded
        labels = await run_in_threadpool(score, texts, model, vectorizer)
        return JSONResponse({"labels": labels})

    @asynccontextmanager
    async def lifespan(app: Starlette):
        await load_or_none()  # warm up; failures surface via /healthz
        yield

    return Starlette(
        routes=[
            Route("/", index, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/predict", predict, methods=["POST"]),
        ],
        lifespan=lifespan,
    )


app = create_app()
