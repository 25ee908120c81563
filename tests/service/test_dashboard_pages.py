"""The dashboard's list and build pages: filters, cache badges, the waterfall, what the stage
details say, links, ETA and time saved, and pages that run no inline code at all."""

from __future__ import annotations

import html
import re

import pytest
import sqlalchemy as sa
from google.cloud.devtools.cloudbuild_v1 import Build
from starlette.testclient import TestClient

from service.rendering import SCRIPTS, static_url
from tests.service.test_api import count_selects, make_build
from tests.service.test_pages import Tags, rows
from trainhook.builds import add_event, append_log
from worker.cloudbuild.builder import record_detail

TRAIN_HIT = (
    "model cache hit: key 3f2a9c0d1e2b produced by build #4; macro F1 0.812; gate: first model"
)
TRAIN_MISS = "trained (cache miss), stored as key 3f2a9c0d1e2b; macro F1 0.790; gate: no regression"
HASH = (
    "data data/cleaned_training_sample.csv git:0d1c2b3a4f5e6d7c; "
    "keys model 3f2a9c0d1e2b deps 1111aaaa2222 nltk 3333bbbb4444"
)


def cell(page: str, build_id: int) -> str:
    """The HTML of one row of the list."""
    row = page[page.index(f'data-build-id="{build_id}"') :]
    return row[: row.index("</tr>")]


def section(page: str, stage: str) -> str:
    """The HTML of one stage's row on the build page."""
    row = page[page.index(f'id="stage-{stage}"') :]
    return row[: row.index("</tr>")]


def test_list_filters_by_branch_and_keeps_it_in_pager_links(client: TestClient, engine):
    made = sorted((make_build(engine, ref="refs/heads/dev") for _ in range(3)), reverse=True)
    make_build(engine, ref="refs/heads/main")
    page = client.get("/?branch=dev&limit=2").text
    assert rows(page) == made[:2]
    assert Tags(page).find("input", name="branch", value="dev")
    older = html.unescape(Tags(page).find("a", rel="next")[0]["href"] or "")
    assert "branch=dev" in older
    assert rows(client.get(older).text) == made[2:]


def test_list_shows_cache_badges_from_stage_events(client: TestClient, engine: sa.Engine):
    hit = make_build(engine, status="succeeded", stages={"train": ("succeeded", TRAIN_HIT, "hit")})
    levels = make_build(
        engine,
        status="succeeded",
        stages={
            "hash": ("succeeded", HASH + "; deps hit nltk miss", None),
            "train": ("succeeded", TRAIN_MISS, "miss"),
        },
    )
    none = make_build(engine, status="failed", stages={"test": ("failed", "2 failed", None)})
    page = client.get("/").text
    badges = {
        b: [
            (a["data-level"], a["class"])
            for a in Tags(cell(page, b)).find("span")
            if "data-level" in a
        ]
        for b in (hit, levels, none)
    }
    # The worker records the model level in the train stage; deps/nltk only when it writes them.
    assert badges[hit] == [("model", "badge b-hit")]
    assert badges[levels] == [
        ("deps", "badge b-hit"),
        ("nltk", "badge b-miss"),
        ("model", "badge b-miss"),
    ]
    assert badges[none] == []


def test_list_rows_show_commit_trigger_status_duration_and_stages(client, engine):
    build_id = make_build(engine, status="succeeded", trigger="replay", created_ago=75)
    row = cell(client.get("/").text, build_id)
    assert ">0123456<" in row and "Retrain on fresh data" in row and "Octo Cat" in row
    assert ">replay<" in row and "badge b-succeeded" in row
    assert re.search(r">1m 1[5-9]s<", row)
    assert row.count("<li ") == 10


def test_list_links_exports_and_history_with_its_filters(client: TestClient, engine):
    make_build(engine)
    page = client.get("/?repo=octo-org/social-score-api&status=queued").text
    links = [html.unescape(a["href"] or "") for a in Tags(page).find("a")]
    assert "/api/builds.csv?repo=octo-org%2Fsocial-score-api&status=queued" in links
    assert "/api/builds.json?repo=octo-org%2Fsocial-score-api&status=queued" in links
    assert "/repos/octo-org/social-score-api/history" in links


def test_list_carries_its_position_for_live_updates(client: TestClient, engine: sa.Engine):
    older = make_build(engine, status="succeeded")
    newer = make_build(engine, status="running", stages={"checkout": ("running", None, None)})
    with engine.connect() as conn:
        last = conn.execute(sa.text("SELECT max(id) FROM stage_events")).scalar_one()
    listing = Tags(client.get("/").text).find("div", id="list")[0]
    assert listing["data-since"] == str(last) and listing["data-top"] == str(newer)
    older_page = Tags(client.get(f"/?before={newer}").text).find("div", id="list")[0]
    assert older_page["data-top"] == "" and older != newer  # an older page gains no rows
    empty = Tags(client.get("/?repo=nobody/yet").text).find("div", id="list")[0]
    assert empty["data-top"] == "0"  # an empty first page still hears of new builds


def test_list_with_every_filter_still_reads_in_two_queries(client: TestClient, engine):
    for status in ("running", "succeeded", "failed"):
        make_build(engine, status=status, stages={"train": ("succeeded", TRAIN_HIT, "hit")})
    with count_selects(engine) as selects:
        response = client.get("/?repo=octo-org/social-score-api&branch=main&status=failed")
    assert response.status_code == 200 and len(rows(response.text)) == 1
    assert len(selects) == 2, selects


def test_live_pages_reload_without_script_only_inside_noscript(client: TestClient, engine):
    build_id = make_build(engine, status="running")
    for path in ("/", f"/builds/{build_id}"):
        page = client.get(path).text
        assert re.search(r'<noscript><meta http-equiv="refresh" content="\d+"></noscript>', page)
        assert page.count("http-equiv") == 1


@pytest.mark.parametrize("kind", ["list", "build", "history", "missing"])
def test_pages_run_no_inline_code(client: TestClient, engine: sa.Engine, kind: str):
    build_id = make_build(
        engine, status="succeeded", stages={"train": ("succeeded", TRAIN_HIT, "hit")}
    )
    path = {
        "list": "/",
        "build": f"/builds/{build_id}",
        "history": "/repos/octo-org/social-score-api/history",
        "missing": "/builds/999",
    }[kind]
    response = client.get(path)
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    tags = Tags(response.text)
    assert [a.get("src") for a in tags.find("script")] == [static_url(s) for s in SCRIPTS]
    assert not tags.find("style")
    assert not [
        (t, k) for t, attrs in tags.tags for k in attrs if k == "style" or k.startswith("on")
    ]


def test_static_script_and_style_are_served_with_nosniff(client: TestClient):
    for name, kind in [*((s, "javascript") for s in SCRIPTS), ("app.css", "text/css")]:
        response = client.get(static_url(name))
        assert response.status_code == 200 and kind in response.headers["content-type"]
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "immutable" in response.headers["cache-control"]  # the URL changes with the file
    assert client.get("/static/../pages.py").status_code == 404


def test_build_page_explains_a_reused_model_and_links_its_producer(client, engine):
    build_id = make_build(
        engine,
        status="succeeded",
        stages={"hash": ("succeeded", HASH, None), "train": ("succeeded", TRAIN_HIT, "hit")},
    )
    page = client.get(f"/builds/{build_id}").text
    train = section(page, "train")
    assert Tags(train).find("a", href="/builds/4")  # which earlier build produced the model
    for text in ("reused from build #4", "macro F1", "0.812", "passed: first model"):
        assert text in train
    hashed = section(page, "hash")
    assert "data/cleaned_training_sample.csv" in hashed and "3f2a9c0d1e2b" in hashed


def test_build_page_shows_retrain_reason_gate_refusal_digest_and_release(client, engine):
    build_id = make_build(
        engine,
        status="succeeded",
        stages={
            "train": ("succeeded", TRAIN_MISS, "miss"),
            "build": ("succeeded", "bundle b7-0123.tar.gz 9000 bytes sha256:" + "ab" * 32, None),
            "push": ("succeeded", "b7-0123 sha256:abababababababab pushed", None),
            "deploy": ("succeeded", "b7-0123 is current (was b6-ffff); health check ok", None),
        },
    )
    page = client.get(f"/builds/{build_id}").text
    assert "retrained: cache miss" in section(page, "train")
    assert "sha256:" + "ab" * 32 in section(page, "build")
    deploy = section(page, "deploy")
    assert "deployed release" in deploy and ">b7-0123<" in deploy and ">b6-ffff<" in deploy
    refused = make_build(
        engine,
        status="failed",
        stages={"train": ("failed", "trained (cache miss), stored as key 99; macro F1 0.4; "
                          "quality gate refused: 0.400 < minimum 0.600", None)},
    )  # fmt: skip
    assert "refused: 0.400 &lt; minimum 0.600" in section(
        client.get(f"/builds/{refused}").text, "train"
    )


def test_build_page_links_the_commit_on_its_forge(client: TestClient, engine: sa.Engine):
    build_id = make_build(engine)
    link = Tags(client.get(f"/builds/{build_id}").text).find("a", id="commit-link")
    expected = (
        "https://github.com/octo-org/social-score-api/commit/" + "0123456789abcdef" * 2 + "01234567"
    )
    assert link and link[0]["href"] == expected and link[0]["rel"] == "noopener noreferrer"
    unknown = make_build(engine, repo="someone/else")  # not configured: no clone URL to trust
    assert not Tags(client.get(f"/builds/{unknown}").text).find("a", id="commit-link")


FORGED = (
    "FAILED test_deploy: Cloud Build log https://console.cloud.google.com/evil\n"
    "logs https://evil.example/cloudbuild and https://example.com/<b>x</b> javascript:alert(1)"
)


def external_links(page: str, stage: str) -> list[str]:
    """The hrefs of one stage row that leave the service."""
    anchors = Tags(section(page, stage)).find("a")
    return [h for a in anchors if not (h := html.unescape(a["href"] or "")).startswith("/")]


def test_a_url_in_test_output_is_shown_as_text_not_a_link(client, engine):
    build_id = make_build(
        engine,
        status="failed",
        stages={"test": ("failed", FORGED, None), "build": ("failed", FORGED, None)},
    )
    page = client.get(f"/builds/{build_id}").text
    for stage in ("test", "build"):
        row = section(page, stage)
        assert external_links(page, stage) == [] and "Cloud Build log" not in row.split("<pre>")[0]
        assert "https://console.cloud.google.com/evil" in row  # still shown, as text
        assert "https://example.com/&lt;b&gt;x&lt;/b&gt;" in row


def test_the_cloud_build_log_link_comes_only_from_the_cloud_build_builder(client, engine):
    log_url = "https://console.cloud.google.com/cloud-build/builds/abc-123?project=p"
    made = Build(id="abc-123", status=Build.Status.QUEUED, log_url=log_url)
    build_id = make_build(engine, status="running", stages={"test": ("failed", FORGED, None)})
    with engine.begin() as conn:  # as the Cloud Build builder writes them
        add_event(conn, build_id, "build", "pending", detail=record_detail(made))
        add_event(conn, build_id, "build", "running", detail="Cloud Build step build")
        add_event(conn, build_id, "build", "succeeded", detail=f"built img; logs {log_url}x")
    page = client.get(f"/builds/{build_id}").text
    assert external_links(page, "build") == [log_url]  # once, and not the detail's URL
    (anchor,) = Tags(section(page, "build")).find("a")
    assert anchor["target"] == "_blank" and anchor["rel"] == "noopener noreferrer"
    assert external_links(page, "test") == []
    # Without the builder's record (a local build, a forged line elsewhere) there is no link.
    local = make_build(
        engine,
        status="failed",
        stages={"build": ("failed", record_detail(made), None)},  # e.g. an exception's text
    )
    assert external_links(client.get(f"/builds/{local}").text, "build") == []


def test_waterfall_labels_every_bar_with_its_duration(client: TestClient, engine):
    build_id = make_build(
        engine,
        status="succeeded",
        created_ago=100,
        stages={"checkout": ("succeeded", None, None), "test": ("skipped", "none", None),
                "train": ("succeeded", None, "miss")},
        times={"checkout": (0, 10), "test": (10, 10), "train": (20, 70)},
    )  # fmt: skip
    page = client.get(f"/builds/{build_id}").text

    def label(stage: str) -> str:
        row = page[page.index(f'<g class="wf-row" data-stage="{stage}"') :]
        return re.search(r'<text class="lbl"[^>]*>([^<]*)</text>', row)[1]  # type: ignore[index]

    assert (label("checkout"), label("test"), label("train")) == ("10s", "skipped", "50s")
    assert label("received") != "" and label("vertex") == ""
    ticks = re.findall(r'<text class="tick"[^>]*>([^<]*)</text>', page)
    assert ticks[0] == "0" and "1m 00s" in ticks  # a time axis in round steps


def _history(engine: sa.Engine, train: list[tuple[float, str, str]]) -> list[int]:
    """Finished builds whose train stage took these (seconds, cache, sha)."""
    made = []
    for seconds, cache, sha in train:
        detail = TRAIN_HIT if cache == "hit" else TRAIN_MISS
        stages = {"checkout": ("succeeded", None, None), "train": ("succeeded", detail, cache)}
        times = {"checkout": (0.0, 5.0), "train": (10.0, 10 + seconds)}
        made.append(
            make_build(
                engine,
                status="succeeded",
                sha=sha * 40,
                created_ago=seconds + 20,
                stages=stages,  # type: ignore[arg-type]
                times=times,  # type: ignore[arg-type]
            )
        )
    return made


def test_running_build_shows_forecast_bars_and_an_eta(client: TestClient, engine):
    _history(engine, [(40, "miss", "a"), (40, "miss", "b"), (40, "miss", "c")])
    running = make_build(
        engine,
        status="running",
        created_ago=6,
        stages={"checkout": ("running", None, None)},
        times={"checkout": (1, None)},
    )
    page = client.get(f"/builds/{running}").text
    train = page[page.index('<g class="wf-row" data-stage="train"') :]
    assert 'class="bar s-pending forecast"' in train[: train.index("</g>")]
    assert "~40s" in train[: train.index("</g>")]
    eta = Tags(page).find("dd", id="eta")
    assert eta and 40 <= float(eta[0]["data-eta"] or 0) <= 46  # 40 s train + what checkout has left


def test_cache_hit_build_shows_the_training_time_it_saved(client: TestClient, engine):
    *_, hit = _history(engine, [(30, "miss", "a"), (50, "miss", "b"), (1, "hit", "c")])
    page = client.get(f"/builds/{hit}").text
    saved = page[page.index('id="saved"') :]
    assert saved.startswith('id="saved">39s of training')  # median miss 40 s - 1 s


def test_build_page_carries_its_event_and_log_position(client: TestClient, engine):
    build_id = make_build(engine, status="running", logs={"checkout": "cloning\n"})
    with engine.begin() as conn:
        add_event(conn, build_id, "checkout", "running")
        append_log(conn, build_id, "checkout", "more\n")
    with engine.connect() as conn:
        event = conn.execute(sa.text("SELECT max(id) FROM stage_events")).scalar_one()
        log = conn.execute(sa.text("SELECT max(id) FROM stage_logs")).scalar_one()
    card = Tags(client.get(f"/builds/{build_id}").text).find("div", id="build")[0]
    assert card["data-since"] == f"{event}.{log}"


def test_forced_rebuild_expects_a_full_training(client: TestClient, engine: sa.Engine):
    _history(engine, [(40, "miss", "a"), (1, "hit", "b"), (1, "hit", "c")])
    forced = make_build(
        engine, status="running", trigger="rebuild", stages={"hash": ("running", None, None)}
    )
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE builds SET force = true WHERE id = {forced}"))
    page = client.get(f"/builds/{forced}").text
    train = page[page.index('<g class="wf-row" data-stage="train"') :]
    assert "~40s" in train[: train.index("</g>")]  # the median of trainings, not of all builds
    assert "(forced: caches ignored)" in page


def test_build_without_a_commit_yet_says_the_worker_resolves_the_ref(client, engine):
    build_id = make_build(engine, sha="", trigger="rebuild")
    assert "the worker resolves refs/heads/main" in client.get(f"/builds/{build_id}").text


def test_list_filters_by_trigger_and_keeps_it_in_pager_and_export_links(client: TestClient, engine):
    pulls = sorted(
        (make_build(engine, ref=f"refs/pull/{n}/head", trigger="pull_request") for n in (1, 2, 3)),
        reverse=True,
    )
    make_build(engine)
    page = client.get("/?trigger=pull_request&limit=2").text
    assert rows(page) == pulls[:2]
    assert Tags(page).find("option", value="pull_request", selected=None)
    older = html.unescape(Tags(page).find("a", rel="next")[0]["href"] or "")
    assert "trigger=pull_request" in older
    assert rows(client.get(older).text) == pulls[2:]
    links = [html.unescape(a["href"] or "") for a in Tags(page).find("a")]
    assert "/api/builds.csv?trigger=pull_request" in links


def test_list_links_a_pull_request_build_to_its_request(client: TestClient, engine):
    pull = make_build(engine, ref="refs/pull/7/head", trigger="pull_request")
    push = make_build(engine)
    page = client.get("/").text
    assert 'href="https://github.com/octo-org/social-score-api/pull/7"' in cell(page, pull)
    assert "data-pull-request" not in cell(page, push)


def test_the_build_page_links_a_request_build_to_its_request(client: TestClient, engine):
    pull = make_build(engine, ref="refs/merge-requests/7/head", trigger="pull_request")
    push = make_build(engine)
    page = client.get(f"/builds/{pull}").text
    (link,) = Tags(page).find("a", id="pull-request-link")
    assert link["href"] == "https://github.com/octo-org/social-score-api/pull/7"
    assert ">#7</a>" in page
    assert "pull-request-link" not in client.get(f"/builds/{push}").text


def test_the_build_page_escapes_the_request_link_and_names_a_request_without_a_web_page(
    make_settings, db_url: str, engine: sa.Engine
):
    from service.app import create_app
    from trainhook.runtime import build_runtime

    hostile = 'https://git.example"onmouseover="alert(1)/octo-org/social-score-api.git'
    settings = make_settings(db_url, clone_url=hostile.replace('"', '\\"'))  # TOML-escaped
    assert settings.repos[0].clone_url == hostile
    pull = make_build(engine, ref="refs/pull/7/head", trigger="pull_request")
    with TestClient(create_app(build_runtime(settings, engine))) as client:
        page = client.get(f"/builds/{pull}").text
    (link,) = Tags(page).find("a", id="pull-request-link")
    # One attribute holding the whole URL, quotes and all: no handler was injected.
    assert "onmouseover" not in link and (link["href"] or "").endswith("/pull/7")
    assert '"onmouseover="' not in page

    local = make_settings(db_url, clone_url="file:///srv/git/social-score-api.git")
    with TestClient(create_app(build_runtime(local, engine))) as client:
        page = client.get(f"/builds/{pull}").text
    assert Tags(page).find("a", id="pull-request-link") == []
    assert '<span id="pull-request-link">#7</span>' in page
