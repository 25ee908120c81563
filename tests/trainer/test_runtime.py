"""trainhook_runtime: the manifest a trained model carries, and loading it with its checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import joblib
import pytest
import sklearn

from trainer import train
from trainhook_runtime import RUNTIME_VERSION, IncompatibleModel, load_model
from trainhook_runtime.loading import MANIFEST, check_manifest, read_manifest
from trainhook_runtime.versions import check_sklearn_version


@pytest.fixture(scope="module")
def model_dir(sample_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runtime") / "model"
    train(sample_csv, out)
    return out


@pytest.fixture
def copy(model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(model_dir, tmp_path / "model"))


def test_the_manifest_names_format_versions_labels_and_rows(model_dir: Path) -> None:
    manifest = read_manifest(model_dir)
    metrics = json.loads((model_dir / "metrics.json").read_text())

    assert manifest["format"] == 1 and manifest["runtime_version"] == RUNTIME_VERSION
    assert manifest["versions"]["scikit-learn"] == sklearn.__version__
    assert {"python", "numpy", "scipy", "nltk", "joblib"} <= set(manifest["versions"])
    assert manifest["labels"] == sorted(metrics["data"]["class_counts"])
    assert manifest["trained_on_rows"] == metrics["rows"]["shipped_model"]
    assert manifest["contract"] == "model.predict(vectorizer.transform(texts))"


def test_load_model_predicts_as_the_two_pickles_do(model_dir: Path) -> None:
    texts = ["@airline thanks, great flight!", "lost my bag again", ""]
    loaded = load_model(model_dir)

    model = joblib.load(model_dir / "model.joblib")
    vectorizer = joblib.load(model_dir / "vectorizer.joblib")
    assert loaded.predict(texts) == [str(x) for x in model.predict(vectorizer.transform(texts))]
    assert type(loaded.vectorizer).__module__ == "trainhook_runtime.text"


def test_another_scikit_learn_minor_is_refused_naming_both_versions(copy: Path) -> None:
    manifest = read_manifest(copy)
    manifest["versions"]["scikit-learn"] = "0.24.2"
    (copy / MANIFEST).write_text(json.dumps(manifest))

    with pytest.raises(IncompatibleModel) as refused:
        load_model(copy)

    assert "0.24.2" in str(refused.value) and sklearn.__version__ in str(refused.value)


def test_another_scikit_learn_patch_release_loads() -> None:
    check_sklearn_version("1.9.1", "1.9.0")
    with pytest.raises(IncompatibleModel, match=r"1\.8\.2.*1\.9\.0"):
        check_sklearn_version("1.8.2", "1.9.0")


def test_a_model_from_another_runtime_major_is_refused_naming_both_versions(copy: Path) -> None:
    manifest = read_manifest(copy)
    manifest["runtime_version"] = "7.0.0"
    (copy / MANIFEST).write_text(json.dumps(manifest))

    with pytest.raises(IncompatibleModel) as refused:
        load_model(copy)

    assert "7.0.0" in str(refused.value) and RUNTIME_VERSION in str(refused.value)


def test_a_newer_manifest_format_is_refused() -> None:
    with pytest.raises(IncompatibleModel, match="format 2"):
        check_manifest({"format": 2, "runtime_version": RUNTIME_VERSION})


def test_unpickling_a_vectorizer_of_another_runtime_major_names_both_versions(
    model_dir: Path, tmp_path: Path
) -> None:
    vectorizer = joblib.load(model_dir / "vectorizer.joblib")
    state = vectorizer.__getstate__()
    state["runtime_version"] = "9.1.0"

    class Future:  # pickles as the runtime's class with a future version's state
        def __reduce__(self) -> tuple:
            return (object.__new__, (type(vectorizer),), state)

    joblib.dump(Future(), tmp_path / "vectorizer.joblib")
    with pytest.raises(IncompatibleModel) as refused:
        joblib.load(tmp_path / "vectorizer.joblib")

    assert "9.1.0" in str(refused.value) and RUNTIME_VERSION in str(refused.value)


def test_a_model_directory_without_a_manifest_is_refused_by_name(copy: Path) -> None:
    (copy / MANIFEST).unlink()
    with pytest.raises(FileNotFoundError, match=MANIFEST):
        load_model(copy)


def test_the_example_app_loads_a_trained_model_without_touching_sys_path(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util
    import sys

    app_file = Path(__file__).resolve().parents[2] / "examples" / "social-score-api" / "app.py"
    spec = importlib.util.spec_from_file_location("social_score_app", app_file)
    assert spec is not None and spec.loader is not None
    app = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "social_score_app", app)
    before = list(sys.path)
    spec.loader.exec_module(app)

    model, vectorizer = app.load_model(model_dir)

    assert sys.path == before
    assert app.score(["thanks!"], model, vectorizer) == load_model(model_dir).predict(["thanks!"])
