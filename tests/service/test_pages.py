"""GET / and /builds/{id}: server-rendered, escaped, paginated, and refreshed only while live."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from markupsafe import escape
from starlette.testclient import TestClient

from service.pages import duration, env
from service.rendering import SCRIPTS, static_url
from tests.service.test_api import DOWN_PASSWORD, broken_engine, count_selects, make_build
from trainhook.builds import STAGES

XSS = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>']
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


class Tags(HTMLParser):
    """Every start tag with its attributes, as a browser's tokenizer would see them."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def find(self, tag: str, **attrs: str | None) -> list[dict[str, str | None]]:
        """Tags with these attributes; None matches a bare attribute such as `selected`."""
        return [
            a
            for t, a in self.tags
            if t == tag and all(k in a and a[k] == v for k, v in attrs.items())
        ]


def rows(page: str) -> list[int]:
    return [int(a["data-build-id"] or 0) for a in Tags(page).find("tr") if "data-build-id" in a]


def refreshes(page: str) -> bool:
    return bool(Tags(page).find("meta", **{"http-equiv": "refresh"}))


def test_status_page_lists_newest_first_with_each_builds_summary(client: TestClient, engine):
    older = make_build(engine, status="succeeded", trigger="rebuild")
    newer = make_build(
        engine,
        ref="refs/heads/release/2.0",
        sha="fedcba9876543210fedcba9876543210fedcba98",
        message="Bump the dataset\n\nsecond paragraph stays off the list",
        author="Mona Lisa",
        status="failed",
        stages={"checkout": ("succeeded", None, None), "test": ("failed", "2 failed", None)},
        error="tests failed",
    )
    response = client.get("/")
    assert response.status_code == 200
    page = response.text
    assert rows(page) == [newer, older]
    assert f'href="/builds/{newer}"' in page
    assert "release/2.0" in page and "refs/heads/release/2.0" in page  # branch, full ref in title
    assert ">fedcba9<" in page and "Bump the dataset" in page
    assert "second paragraph" not in page
    assert "Mona Lisa" in page and "rebuild" in page
    assert 'class="badge b-failed"' in page and 'class="badge b-succeeded"' in page
    cells = Tags(page).find("li")
    assert len(cells) == 2 * len(STAGES)
    assert [c["data-stage"] for c in cells[: len(STAGES)]] == list(STAGES)
    assert cells[STAGES.index("test")]["class"] == "s-failed"
    assert (cells[STAGES.index("test")]["title"] or "").startswith("test: failed, ")
    assert cells[STAGES.index("train")]["class"] == "s-pending"


@pytest.mark.parametrize(
    "seconds,text",
    [
        (None, "—"),
        (0.4213, "0.42s"),
        (3.25, "3.2s"),
        (42.4, "42s"),
        (125, "2m 05s"),
        (3720, "1h 02m"),
    ],
)
def test_durations_are_human_sized(seconds: float | None, text: str):
    assert duration(seconds) == text


def test_status_page_shows_total_duration_and_time_so_far(client: TestClient, engine):
    done = make_build(engine, status="succeeded", created_ago=125)
    live = make_build(engine, status="running", created_ago=42)
    page = client.get("/").text

    def cell(build_id: int) -> str:
        row = page[page.index(f'data-build-id="{build_id}"') :]
        return row[: row.index("</tr>")]

    assert re.search(r">2m 0[5-9]s<", cell(done))
    assert re.search(r">4[2-9]s…<", cell(live))  # still running: time so far, marked unfinished


def test_status_page_pages_by_cursor_with_an_older_link(client: TestClient, engine: sa.Engine):
    made = sorted((make_build(engine, repo="a/one") for _ in range(5)), reverse=True)
    make_build(engine, repo="b/other")
    url, seen = "/?repo=a%2Fone&limit=2", []
    while url:
        page = client.get(url).text
        seen += rows(page)
        older = Tags(page).find("a", rel="next")
        url = html.unescape(older[0]["href"] or "") if older else ""
        if url:
            assert "repo=a%2Fone" in url and "limit=2" in url  # filters survive paging
    assert seen == made
    assert Tags(page).find("a", rel="first")  # the last page links back to the newest


def test_status_page_filters_by_status_in_the_url(client: TestClient, engine: sa.Engine):
    ok = make_build(engine, status="succeeded")
    make_build(engine, status="failed")
    page = client.get("/?status=succeeded").text
    assert rows(page) == [ok]
    assert Tags(page).find("option", value="succeeded", selected=None)  # the form shows the filter


def test_status_page_refreshes_only_while_a_build_is_in_flight(client: TestClient, engine):
    make_build(engine, status="succeeded")
    assert not refreshes(client.get("/").text)
    running = make_build(engine, status="running")
    assert refreshes(client.get("/").text)
    assert not refreshes(client.get(f"/?before={running}").text)  # this page holds no live build


def test_empty_status_page_says_so(client: TestClient):
    response = client.get("/")
    assert response.status_code == 200
    assert "No builds yet" in response.text and not refreshes(response.text)


@pytest.mark.parametrize("query,param", [("status=nope", "status"), ("before=x", "before")])
def test_status_page_bad_filter_is_400_naming_it(client: TestClient, query: str, param: str):
    response = client.get(f"/?{query}")
    assert response.status_code == 400
    assert f"&#39;{param}&#39;" in response.text


def test_status_page_reads_builds_and_stages_in_two_queries(client: TestClient, engine):
    for status in ("queued", "running", "succeeded", "failed", "cancelled"):
        make_build(engine, status=status, stages={"checkout": ("succeeded", None, None)})
    with count_selects(engine) as selects:
        response = client.get("/")
    assert response.status_code == 200 and len(rows(response.text)) == 5
    assert len(selects) == 2, selects


@pytest.mark.parametrize("payload", XSS)
def test_commit_message_script_is_shown_as_text(client: TestClient, engine, payload: str):
    build_id = make_build(
        engine,
        ref=f"refs/heads/{payload}",
        message=payload,
        author=payload,
        status="failed",
        stages={"test": ("failed", payload, None)},
        logs={"test": payload},
        error=payload,
    )
    for path in ("/", f"/builds/{build_id}", f"/?repo={payload}"):
        page = client.get(path).text
        assert payload not in page
        assert str(escape(payload)) in page  # shown, as text
        tags = Tags(page)
        # The one script is the page's own static file: nothing from the payload runs.
        assert [a["src"] or "" for a in tags.find("script")] == [static_url(s) for s in SCRIPTS]
        assert not tags.find("img")
        assert not any(k.startswith("on") for _, attrs in tags.tags for k in attrs)


def test_templates_escape_whatever_their_file_name():
    # select_autoescape would leave a template not named *.html unescaped.
    assert env.from_string("{{ v }}").render(v="<b>") == "&lt;b&gt;"


def test_pages_carry_csp_and_nosniff(client: TestClient, engine: sa.Engine):
    build_id = make_build(engine)
    for path in ("/", f"/builds/{build_id}", "/builds/404", "/builds/x"):
        response = client.get(path)
        assert response.headers["content-security-policy"] == CSP
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["content-type"].startswith("text/html")


def test_build_page_shows_header_stages_in_contract_order_and_logs(client, engine):
    build_id = make_build(
        engine,
        status="succeeded",
        trigger="replay",
        stages={
            "checkout": ("succeeded", None, None),
            "test": ("skipped", "no test_command configured", None),
            "hash": ("succeeded", None, None),
            "train": ("succeeded", "model key 3f2a matched build #4", "hit"),
            "build": ("succeeded", None, "miss"),
        },
        logs={"checkout": "cloned\nchecked out abc\n", "build": "step 1/3\n"},
    )
    response = client.get(f"/builds/{build_id}")
    assert response.status_code == 200
    page = response.text
    for text in ("octo-org/social-score-api", "refs/heads/main", "0123456789abcdef", "replay"):
        assert text in page
    assert 'class="badge b-succeeded"' in page
    stage_rows = [a["data-stage"] for a in Tags(page).find("tr") if "data-stage" in a]
    assert stage_rows == list(STAGES)
    train = page[page.index('id="stage-train"') : page.index('id="stage-build"')]
    assert "badge b-hit" in train and "model key 3f2a matched build #4" in train
    assert "badge b-miss" in page[page.index('id="stage-build"') :]
    assert "no test_command configured" in page
    logs = [a["id"] for a in Tags(page).find("details")]
    assert logs == ["log-checkout", "log-build"]
    assert "checked out abc" in page and "2 lines" in page
    assert not refreshes(page)


def test_build_page_waterfall_follows_stage_times(client: TestClient, engine: sa.Engine):
    build_id = make_build(
        engine,
        status="succeeded",
        created_ago=100,
        stages={"checkout": ("succeeded", None, None), "train": ("succeeded", None, "miss")},
        times={"checkout": (0, 10), "train": (20, 70)},
    )
    page = client.get(f"/builds/{build_id}").text

    def bar(stage: str) -> tuple[float, float]:
        """(left %, width %) of a stage's bar on the time axis of the waterfall."""
        svg = Tags(page).find("svg", id="waterfall")[0]
        left, right = float(svg["data-left"] or 0), float(svg["data-right"] or 0)
        row = page[page.index(f'<g class="wf-row" data-stage="{stage}"') :]
        match = re.search(r'class="bar [^"]*" x="([\d.]+)"\s+y="[\d.]+" width="([\d.]+)"', row)
        assert match, row[:500]
        scale = 100 / (right - left)
        return (float(match[1]) - left) * scale, float(match[2]) * scale

    # The build spans ~100 s (created 100 s ago, finished now).
    assert bar("checkout") == pytest.approx((0, 10), abs=1.5)
    assert bar("train") == pytest.approx((20, 50), abs=1.5)
    vertex = page[page.index('<g class="wf-row" data-stage="vertex"') :]
    assert 'visibility="hidden"' in vertex[: vertex.index("</g>")]  # never started: no bar


def test_failed_build_shows_its_error_and_opens_the_failed_log(client, engine):
    build_id = make_build(
        engine,
        status="failed",
        stages={"checkout": ("succeeded", None, None), "test": ("failed", "exit 1", None)},
        logs={"checkout": "ok\n", "test": "AssertionError: boom\n"},
        error="stage test failed: exit 1",
    )
    page = client.get(f"/builds/{build_id}").text
    assert Tags(page).find("pre", id="error") and "stage test failed: exit 1" in page
    assert Tags(page).find("details", id="log-test", open=None)
    assert "open" not in Tags(page).find("details", id="log-checkout")[0]


def test_build_page_refreshes_while_running_only(client: TestClient, engine: sa.Engine):
    running = make_build(engine, status="running", stages={"checkout": ("running", None, None)})
    page = client.get(f"/builds/{running}").text
    assert refreshes(page) and "so far" in page
    queued = make_build(engine)
    assert refreshes(client.get(f"/builds/{queued}").text)


def test_long_log_shows_only_its_tail(client: TestClient, engine, monkeypatch):
    monkeypatch.setattr("service.pages.LOG_TAIL_CHARS", 100)
    build_id = make_build(engine, logs={"checkout": "HEAD-MARK" + "x" * 500 + "TAIL-MARK"})
    page = client.get(f"/builds/{build_id}").text
    assert "TAIL-MARK" in page and "HEAD-MARK" not in page
    assert "showing the last 100 of 518 characters" in page


def test_unknown_build_page_is_404(client: TestClient, engine: sa.Engine):
    make_build(engine)
    for missing in ("424242", "9" * 30):
        response = client.get(f"/builds/{missing}")
        assert response.status_code == 404
        assert "Build not found" in response.text


@pytest.mark.parametrize("raw", ["abc", "1.5", "-2", "0"])
def test_non_integer_build_page_is_400(client: TestClient, raw: str):
    # Decided: a malformed id is the client's error (400), unlike a well-formed unknown id (404).
    response = client.get(f"/builds/{raw}")
    assert response.status_code == 400
    assert "&#39;id&#39;" in response.text


def test_pages_are_503_when_database_is_down(db_url: str, tmp_path: Path, make_settings: Any):
    from service.app import create_app
    from trainhook.runtime import build_runtime

    runtime = build_runtime(make_settings(db_url), broken_engine(db_url, tmp_path))
    with TestClient(create_app(runtime)) as down:
        for path in ("/", "/builds/1"):
            response = down.get(path)
            assert response.status_code == 503
            assert "Database unavailable" in response.text
            assert DOWN_PASSWORD not in response.text and "no-such-dir" not in response.text
