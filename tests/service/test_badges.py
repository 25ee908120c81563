"""README badges: a branch's last verdict and the deployed model's score, as valid SVG with
short cache headers, for configured repositories only."""

from __future__ import annotations

from collections.abc import Iterator
from xml.etree import ElementTree

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from service.app import create_app
from trainhook.builds import BuildSpec, add_event, create_build, mark_finished, mark_started
from trainhook.runtime import build_runtime

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def client(make_settings, sqlite_url: str) -> Iterator[tuple[TestClient, sa.Engine]]:
    runtime = build_runtime(make_settings(sqlite_url, branches=("main", "release/*")))
    with TestClient(create_app(runtime)) as client:
        yield client, runtime.engine
    runtime.close()


def finished(engine: sa.Engine, status: str, ref: str = "refs/heads/main", f1: str = "") -> int:
    with engine.begin() as conn:
        spec = BuildSpec(provider="github", repo="octo-org/social-score-api", ref=ref, sha="a" * 40)
        build_id = create_build(conn, spec)
        mark_started(conn, build_id)
        if f1:
            detail = f"trained (cache miss), stored as key 0123; macro F1 {f1}"
            add_event(conn, build_id, "train", "succeeded", cache="miss", detail=detail)
            add_event(conn, build_id, "deploy", "succeeded", detail="released")
        mark_finished(conn, build_id, status)
    return build_id


def texts(svg: str) -> list[str]:
    root = ElementTree.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return [t.text or "" for t in root.iter(f"{SVG}text")]


def test_a_branch_badge_shows_the_last_verdict_as_valid_svg_with_a_short_cache(client):
    http, engine = client
    url = "/badge/octo-org/social-score-api.svg"
    first = http.get(url)
    assert first.status_code == 200 and texts(first.text) == ["trainhook", "unknown"]
    assert first.headers["content-type"] == "image/svg+xml"
    assert first.headers["cache-control"] == "public, max-age=60"
    finished(engine, "failed")
    assert texts(http.get(url).text)[1] == "failing"
    finished(engine, "succeeded")
    finished(engine, "cancelled")  # says nothing about the code
    assert texts(http.get(url).text)[1] == "passing"
    finished(engine, "failed", ref="refs/heads/release/2")
    assert texts(http.get(url + "?branch=release/2").text)[1] == "failing"
    assert texts(http.get(url).text)[1] == "passing"


def test_the_metric_badge_shows_the_deployed_models_macro_f1(client):
    http, engine = client
    url = "/badge/octo-org/social-score-api.svg?metric=macro_f1"
    assert texts(http.get(url).text) == ["macro F1", "none"]
    finished(engine, "succeeded", f1="0.87654")
    finished(engine, "succeeded")  # not deployed: the deployed model is still the one above
    assert texts(http.get(url).text) == ["macro F1", "0.877"]


def test_unknown_repositories_and_metrics_are_refused(client):
    http, _ = client
    assert http.get("/badge/octo-org/secret-project.svg").status_code == 404
    wrong = http.get("/badge/octo-org/social-score-api.svg?metric=accuracy")
    assert wrong.status_code == 400 and "'metric' must be one of macro_f1" in wrong.text


def test_text_in_a_badge_is_escaped(client):
    from service.badges import render_svg

    assert texts(render_svg("a<b", "x&y", "#000")) == ["a<b", "x&y"]
