"""Tests for the prediction service, using a tiny model built on the fly."""

from __future__ import annotations

import json

import app as app_module
import joblib
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from starlette.testclient import TestClient

SENTENCES = [
    ("I love this, what a wonderful day", "positive"),
    ("great news, so happy for you", "positive"),
    ("this is awesome and amazing", "positive"),
    ("best concert ever, loved it", "positive"),
    ("thank you so much, fantastic work", "positive"),
    ("happy happy joy, great vibes", "positive"),
    ("I hate this, what a terrible day", "negative"),
    ("awful news, so sad and angry", "negative"),
    ("this is horrible and disgusting", "negative"),
    ("worst service ever, hated it", "negative"),
    ("so disappointed, terrible work", "negative"),
    ("sad angry awful, bad vibes", "negative"),
]


@pytest.fixture(scope="session")
def trained():
    texts, labels = zip(*SENTENCES, strict=True)
    vectorizer = TfidfVectorizer()
    model = LogisticRegression(C=10.0).fit(vectorizer.fit_transform(texts), labels)
    return model, vectorizer


@pytest.fixture
def model_dir(tmp_path, trained):
    model, vectorizer = trained
    joblib.dump(model, tmp_path / "model.joblib")
    joblib.dump(vectorizer, tmp_path / "vectorizer.joblib")
    return tmp_path


@pytest.fixture
def client(model_dir):
    with TestClient(app_module.create_app(model_dir)) as c:
        yield c


def test_load_model_and_score(model_dir, trained):
    model, vectorizer = app_module.load_model(model_dir)
    texts = ["what a wonderful amazing day", "terrible awful service"]
    labels = app_module.score(texts, model, vectorizer)
    assert labels == ["positive", "negative"]
    expected = trained[0].predict(trained[1].transform(texts))
    assert labels == [str(x) for x in expected]


def test_load_model_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        app_module.load_model(tmp_path)


def test_predict(client):
    r = client.post("/predict", json={"texts": ["I love it, great", "I hate it, awful", ""]})
    assert r.status_code == 200
    labels = r.json()["labels"]
    assert labels[:2] == ["positive", "negative"]
    assert len(labels) == 3 and all(isinstance(x, str) for x in labels)


def test_index(client):
    r = client.get("/")
    assert r.status_code == 200
    assert r.json()["name"] == "social-score-api"


def test_healthz_ok(client):
    r = client.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert isinstance(body["model"], str) and body["model"]


def test_healthz_reports_metrics(model_dir):
    (model_dir / "metrics.json").write_text(
        json.dumps({"trainer": "trainer 0.1.0", "data": {"rows": 12}, "accuracy": 1.0})
    )
    with TestClient(app_module.create_app(model_dir)) as c:
        model = c.get("/healthz").json()["model"]
    assert "trainer 0.1.0" in model and "rows" in model


def test_healthz_503_without_model(tmp_path):
    with TestClient(app_module.create_app(tmp_path)) as c:
        r = c.get("/healthz")
        assert r.status_code == 503
        assert r.json()["status"] != "ok"
        assert c.post("/predict", json={"texts": ["hi"]}).status_code == 503


def test_model_dir_env(monkeypatch, model_dir):
    monkeypatch.setenv("MODEL_DIR", str(model_dir))
    with TestClient(app_module.create_app()) as c:
        assert c.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "invalid JSON"),
        (b"[1, 2]", "JSON object"),
        (b"{}", "missing"),
        (b'{"texts": "hello"}', "list"),
        (b'{"texts": []}', "empty"),
        (b'{"texts": ["ok", 3]}', "strings"),
        (json.dumps({"texts": ["x"] * 1001}).encode(), "too many"),
    ],
)
def test_predict_bad_input(client, body, fragment):
    r = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert fragment in r.json()["error"]


def test_predict_accepts_max_batch(client):
    r = client.post("/predict", json={"texts": ["great day"] * 1000})
    assert r.status_code == 200
    assert len(r.json()["labels"]) == 1000
