"""The training run end to end: artifacts contract, metrics, determinism, fallback, failures."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import joblib
import nltk
import pytest

from tests.trainer.conftest import REPO_ROOT, run_python
from tests.trainer.test_nltkdata import build_index
from trainer import TRAINER_VERSION
from trainer.data import DataError
from trainer.params import TrainParams
from trainer.pipeline import TrainResult, train

PROBES = ["@SkyJet thanks so much, great crew :)", "flight cancelled again, worst ever", "hi?"]
ARTIFACTS = {
    "model.joblib",
    "vectorizer.joblib",
    "model_manifest.json",
    "metrics.json",
    "model_card.md",
}


def predict(out: Path, texts: list[str]) -> list[str]:
    model = joblib.load(out / "model.joblib")
    vectorizer = joblib.load(out / "vectorizer.joblib")
    return [str(label) for label in model.predict(vectorizer.transform(texts))]


def without_timings(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "timings"}


@pytest.fixture(scope="module")
def trained(sample_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return train(sample_csv, tmp_path_factory.mktemp("run") / "model")


def test_model_predicts_labels_from_vectorizer_features(trained: TrainResult) -> None:
    assert {p.name for p in trained.out_dir.iterdir()} == ARTIFACTS
    labels = predict(trained.out_dir, PROBES)
    assert len(labels) == 3 and set(labels) <= {"positive", "negative", "neutral"}
    assert labels[:2] == ["positive", "negative"]


def test_artifacts_load_and_predict_in_a_fresh_process(
    trained: TrainResult, child_env: dict[str, str]
) -> None:
    code = (
        "import joblib, json, sys; d = sys.argv[1]; "
        "m = joblib.load(d + '/model.joblib'); v = joblib.load(d + '/vectorizer.joblib'); "
        "print(json.dumps([str(x) for x in m.predict(v.transform(sys.argv[2:]))]))"
    )
    status, out, err = run_python(["-c", code, str(trained.out_dir), *PROBES], child_env, REPO_ROOT)
    assert status == 0, err
    assert json.loads(out) == predict(trained.out_dir, PROBES)


def test_metrics_json_describes_the_run(trained: TrainResult) -> None:
    metrics = json.loads((trained.out_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics == trained.metrics
    rows = metrics["rows"]
    assert rows["read"] == 600 and rows["read"] == rows["used"] + sum(rows["dropped"].values())
    assert rows["train"] + rows["validation"] == rows["used"] == rows["shipped_model"]
    assert abs(rows["validation"] - 0.2 * rows["used"]) <= 1
    labels = metrics["confusion_matrix"]["labels"]
    assert labels == ["negative", "neutral", "positive"]
    matrix = metrics["confusion_matrix"]["matrix"]
    assert sum(map(sum, matrix)) == rows["validation"]
    assert [sum(row) for row in matrix] == [metrics["per_class"][c]["support"] for c in labels]
    assert set(metrics["per_class"]["neutral"]) == {"precision", "recall", "f1", "support"}
    assert 0.6 < metrics["macro_f1"] <= 1 and 0.6 < metrics["accuracy"] <= 1
    assert set(metrics["timings"]) >= {"read", "features", "fit", "evaluate", "total_before_write"}
    assert metrics["versions"]["trainer"] == TRAINER_VERSION == metrics["trainer_version"]
    assert metrics["versions"]["nltk"] == nltk.__version__
    assert {"python", "sklearn", "numpy"} <= set(metrics["versions"])
    assert metrics["data"]["file"] == str(trained.data_file) and not metrics["data"]["fallback"]
    assert metrics["params"] == TrainParams().to_dict()
    assert metrics["nltk"]["degraded"] is False and metrics["nltk"]["required"] == []


def test_same_data_and_params_give_identical_predictions_and_metrics(
    sample_csv: Path, trained: TrainResult, tmp_path: Path
) -> None:
    again = train(sample_csv, tmp_path / "again", workers=2)
    assert without_timings(again.metrics) == without_timings(trained.metrics)
    texts = [*PROBES, *(f"@JetPath flight {n} was late again" for n in range(20))]
    assert predict(again.out_dir, texts) == predict(trained.out_dir, texts)
    assert (again.out_dir / "model_card.md").read_bytes() == (
        trained.out_dir / "model_card.md"
    ).read_bytes()


def test_the_shipped_model_is_refitted_on_every_row_and_the_card_says_so(
    sample_csv: Path, trained: TrainResult, tmp_path: Path
) -> None:
    held_out = train(sample_csv, tmp_path / "held-out", TrainParams(refit=False))
    rows = trained.metrics["rows"]

    # The validation figures come from the same held-out model either way...
    assert without_timings(held_out.metrics)["macro_f1"] == trained.metrics["macro_f1"]
    assert held_out.metrics["rows"]["shipped_model"] == rows["train"] < rows["used"]
    # ...and the shipped models differ: one has seen the validation rows too.
    features = trained.metrics["features"]["total"]
    assert features != held_out.metrics["features"]["total"]
    card = (trained.out_dir / "model_card.md").read_text(encoding="utf-8")
    assert f"refitted on all {rows['used']} used rows" in card
    assert f"fitted on the other {rows['train']} rows only" in card
    held_card = (held_out.out_dir / "model_card.md").read_text(encoding="utf-8")
    assert f"fitted on the {rows['train']} train rows (`refit = false`)" in held_card
    manifests = [
        json.loads((r.out_dir / "model_manifest.json").read_text()) for r in (trained, held_out)
    ]
    assert [m["trained_on_rows"] for m in manifests] == [rows["used"], rows["train"]]


def test_another_seed_gives_another_split(
    sample_csv: Path, trained: TrainResult, tmp_path: Path
) -> None:
    other = train(sample_csv, tmp_path / "seed1", TrainParams(seed=1))
    assert other.metrics["confusion_matrix"] != trained.metrics["confusion_matrix"]


def test_model_card_reports_data_results_and_usage(trained: TrainResult) -> None:
    card = (trained.out_dir / "model_card.md").read_text(encoding="utf-8")
    assert f"{trained.macro_f1:.4f}" in card and str(trained.data_file) in card
    assert "model.predict(vectorizer.transform(" in card and "WARNING" not in card


def test_a_data_directory_uses_the_first_existing_candidate(
    sample_csv: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    (repo / "data" / "prod.csv").write_bytes(sample_csv.read_bytes())
    result = train(repo, tmp_path / "out")
    assert result.data_file == str(repo / "data" / "prod.csv") and not result.fallback_used


def test_no_data_file_falls_back_to_a_generated_sample_and_says_so_loudly(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    result = train(tmp_path / "repo", tmp_path / "out")
    assert result.fallback_used and result.summary()["fallback_used"] is True
    assert result.data_file == str(tmp_path / "out" / "fallback_sample.csv")
    assert (tmp_path / "out" / "fallback_sample.csv").is_file()
    assert any(n.startswith("FALLBACK") and "GENERATED" in n for n in result.notices)
    assert result.metrics["data"]["fallback"] is True
    card = (tmp_path / "out" / "model_card.md").read_text(encoding="utf-8")
    assert "WARNING: trained on GENERATED SAMPLE DATA" in card


def test_unusable_data_raises_and_writes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nonly,one\nclass,one\n", encoding="utf-8")
    with pytest.raises(DataError, match="only one class"):
        train(bad, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]


def test_a_failed_run_leaves_the_previous_artifacts_untouched(
    trained: TrainResult, tmp_path: Path
) -> None:
    before = {p.name: p.read_bytes() for p in trained.out_dir.iterdir()}
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"text,label\n\xff\xfe,x\n")
    with pytest.raises(DataError, match="UTF-8"):
        train(bad, trained.out_dir)
    assert {p.name: p.read_bytes() for p in trained.out_dir.iterdir()} == before
    assert not [p for p in trained.out_dir.parent.iterdir() if p.name.startswith(".")]


def test_sampling_and_logistic_regression_fulfil_the_same_contract(
    sample_csv: Path, tmp_path: Path
) -> None:
    params = TrainParams(sample_rows=300, classifier="logistic_regression", C=10.0)
    result = train(sample_csv, tmp_path / "lr", params)
    assert result.metrics["rows"]["sampled_out"] == result.metrics["rows"]["read"] - 300 - sum(
        result.metrics["rows"]["dropped"].values()
    )
    assert result.metrics["rows"]["used"] == 300
    assert len(predict(result.out_dir, PROBES)) == 3


def test_stopwords_offline_fall_back_to_scikit_learn_and_record_degraded_nltk(
    sample_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nltk.data, "path", list(nltk.data.path))
    unreachable = (tmp_path / "no-index" / "index.xml").as_uri()
    result = train(
        sample_csv,
        tmp_path / "out",
        TrainParams(stopwords=True),
        nltk_data=tmp_path / "nltk",
        nltk_index=unreachable,
    )
    nltk_info = result.metrics["nltk"]
    assert nltk_info["degraded"] is True and nltk_info["stopwords_source"] == "sklearn"
    assert "download failed" in nltk_info["missing"]["stopwords"]
    assert any("NLTK data missing" in n for n in result.notices)


def test_stopwords_from_a_local_nltk_index_are_used(
    sample_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nltk.data, "path", list(nltk.data.path))
    result = train(
        sample_csv,
        tmp_path / "out",
        TrainParams(stopwords=True),
        nltk_data=tmp_path / "nltk",
        nltk_index=build_index(tmp_path / "srv"),
    )
    assert result.metrics["nltk"]["degraded"] is False
    assert result.metrics["nltk"]["stopwords_source"] == "nltk"
    vectorizer = joblib.load(result.out_dir / "vectorizer.joblib")
    assert vectorizer.normalizer("the crew") == ["crew"]  # the list travels with the model


def test_the_trainer_imports_nothing_from_service_worker_or_trainhook() -> None:
    forbidden = {"service", "worker", "trainhook", "sqlalchemy", "google", "psycopg"}
    for path in (REPO_ROOT / "trainer").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            assert not {n.split(".")[0] for n in names} & forbidden, (path.name, names)
