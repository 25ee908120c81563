"""GET /api/builds.csv and .json: the list with its filters, formula cells defused."""

from __future__ import annotations

import csv
import io
import json

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from service.export import neutralise
from tests.service.test_api import make_build
from tests.service.test_dashboard_pages import TRAIN_HIT


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.parametrize(
    "value,cell",
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("plain text", "plain text"),
        (None, ""),
        (12.5, "12.5"),
    ],
)
def test_formula_cells_are_prefixed_with_a_quote(value, cell):
    assert neutralise(value) == cell


def test_csv_export_has_one_row_per_build_with_neutralised_cells(client: TestClient, engine):
    evil = make_build(
        engine,
        ref="refs/heads/=cmd",
        message='=HYPERLINK("https://evil.example","click")\nsecond line',
        author="@attacker",
        status="succeeded",
        stages={"train": ("succeeded", TRAIN_HIT, "hit")},
    )
    plain = make_build(engine, status="failed", stages={"test": ("failed", "boom", None)})
    response = client.get("/api/builds.csv")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert 'filename="builds.csv"' in response.headers["content-disposition"]
    rows = read_csv(response.text)
    assert [int(r["id"]) for r in rows] == [plain, evil]
    row = rows[1]
    assert row["message"] == '\'=HYPERLINK("https://evil.example","click")'
    assert row["author"] == "'@attacker" and row["branch"] == "'=cmd"
    assert row["model_cache"] == "hit" and row["status"] == "succeeded"
    assert rows[0]["failed_stage"] == "test"
    assert all(not v.startswith(("=", "+", "-", "@")) for r in rows for v in r.values())


def test_exports_follow_the_list_filters_and_page_past_200(client: TestClient, engine):
    made = [make_build(engine, repo="a/one", ref="refs/heads/dev") for _ in range(205)]
    make_build(engine, repo="a/one")
    make_build(engine, repo="b/two", ref="refs/heads/dev")
    rows = read_csv(client.get("/api/builds.csv?repo=a/one&branch=dev").text)
    assert [int(r["id"]) for r in rows] == made[::-1]
    body = client.get("/api/builds.json?repo=a/one&branch=dev&limit=3").json()
    assert [b["id"] for b in body["builds"]] == made[::-1][:3]
    assert set(body["builds"][0]) >= {"id", "repo", "ref", "sha", "status", "stages"}


def test_json_export_is_the_contract_shape(client: TestClient, engine: sa.Engine):
    build_id = make_build(engine, message='"quoted" </script>')
    body = json.loads(client.get("/api/builds.json").text)
    assert body["builds"][0]["id"] == build_id
    assert body["builds"][0]["commit_message"] == '"quoted" </script>'
    assert len(body["builds"][0]["stages"]) == 10


def test_export_bad_filter_is_400(client: TestClient):
    response = client.get("/api/builds.csv?status=nope")
    assert response.status_code == 400 and "'status'" in response.json()["error"]
