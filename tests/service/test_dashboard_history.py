"""GET /repos/{name}/history and its arithmetic: per-stage median and p90, the duration chart,
ETAs, time saved by the model cache, and first build vs cache hit vs code-only change."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from starlette.testclient import TestClient

from service import stats
from tests.service.test_api import make_build
from tests.service.test_dashboard_pages import _history
from tests.service.test_pages import Tags
from trainhook.buildview import fold_stages
from trainhook.models import utcnow

HISTORY = "/repos/octo-org/social-score-api/history"


def stat(page: str, table: str, key: str, column: str) -> str:
    body = page[page.index(f'id="{table}"') :]
    row = body[body.index(f'data-stage="{key}"') :]
    row = row[: row.index("</tr>")]
    return row[row.index(f'data-cell="{column}">') :].split(">", 1)[1].split("<", 1)[0]


def kind_row(page: str, kind: str) -> list[str]:
    row = page[page.index(f'<tr data-kind="{kind}">') :]
    row = row[: row.index("</tr>")]
    return re.findall(r"<td[^>]*>(?:<strong>)?([^<]*)", row)[:4]


@pytest.mark.parametrize(
    "values,median,p90",
    [([], None, None), ([7.0], 7.0, 7.0), ([10, 20, 30, 40, 50], 30.0, 46.0), ([1, 2], 1.5, 1.9)],
)
def test_percentiles_interpolate_between_ranks(values, median, p90):
    assert stats.percentile(values, 0.5) == pytest.approx(median)
    assert stats.percentile(values, 0.9) == pytest.approx(p90)


def test_history_shows_median_and_p90_per_stage(client: TestClient, engine):
    _history(
        engine, [(s, "miss", c) for s, c in ((10, "a"), (20, "b"), (30, "c"), (40, "d"), (50, "e"))]
    )
    make_build(engine, status="failed", stages={"train": ("failed", "boom", None)})  # not counted
    page = client.get(HISTORY).text
    assert stat(page, "stage-stats", "train", "median") == "30s"
    assert stat(page, "stage-stats", "train", "p90") == "46s"
    assert stat(page, "stage-stats", "checkout", "median") == "5.0s"
    assert stat(page, "stage-stats", "vertex", "median") == "—"  # never ran


def test_history_compares_first_build_cache_hit_and_code_only_change(client, engine):
    _history(
        engine,
        [
            (60, "miss", "a"),  # first build: nothing cached
            (1, "hit", "a"),  # the same commit again: a rebuild
            (2, "hit", "b"),  # new commit, same data: code-only change
            (50, "miss", "c"),  # new data: trained again
        ],
    )
    page = client.get(HISTORY).text
    assert kind_row(page, "first build")[1:4:2] == ["1", "1m 00s"]
    assert kind_row(page, "cache hit")[1:4:2] == ["1", "1.0s"]
    assert kind_row(page, "code-only change")[1:4:2] == ["1", "2.0s"]
    assert kind_row(page, "data change")[1:4:2] == ["1", "50s"]
    # Saved per hit against the 55 s median training, and in total.
    savings = Tags(page[page.index('id="savings"') :]).find("tr")
    assert len([a for a in savings if "data-build-id" in a]) == 2
    assert ">1m 47s<" in page[page.index('id="saved-total"') :][:40]  # 54 s + 53 s


def test_history_chart_draws_one_column_per_finished_build(client, engine):
    made = _history(engine, [(10, "miss", "a"), (30, "miss", "b"), (1, "hit", "c")])
    page = client.get(HISTORY).text
    columns = Tags(page).find("rect", **{"class": "bar s-succeeded"})
    faded = Tags(page).find("rect", **{"class": "bar s-succeeded hit"})
    assert [int(c["data-build-id"] or 0) for c in columns + faded] == made[:2] + made[2:]
    heights = [float(c["height"] or 0) for c in columns]
    assert heights[0] < heights[1]  # longer build, taller column
    assert Tags(page).find("line", **{"class": "median"})


def test_history_lists_builds_in_flight_with_an_eta(client: TestClient, engine):
    _history(engine, [(20, "miss", "a"), (20, "miss", "b")])
    running = make_build(engine, status="running", stages={"checkout": ("running", None, None)})
    page = client.get(HISTORY).text
    row = page[page.index(f'<tr data-build-id="{running}">') :]
    assert "about " in row[: row.index("</tr>")]


def test_history_window_is_validated_and_unknown_repo_is_404(client: TestClient, engine):
    assert client.get(HISTORY + "?n=0").status_code == 400
    assert "&#39;n&#39;" in client.get(HISTORY + "?n=x").text
    assert client.get("/repos/nobody/nothing/history").status_code == 404
    assert client.get(HISTORY).status_code == 200  # configured, no builds yet


class Event:
    def __init__(self, stage: str, status: str, seconds_ago: float) -> None:
        self.stage, self.status, self.cache, self.detail = stage, status, None, None
        self.at = utcnow() - timedelta(seconds=seconds_ago)


def test_eta_is_what_the_running_stage_has_left_plus_pending_medians():
    build = {
        "finished_at": None,
        "stages": fold_stages(
            [Event("received", "succeeded", 30), Event("checkout", "running", 4)]
        ),
    }
    medians = {name: None for name in stats.STAGES} | {"checkout": 10.0, "train": 30.0}
    eta = stats.eta_seconds(build, medians, utcnow())
    assert eta == pytest.approx(36.0, abs=0.5)
    assert stats.eta_seconds(build, {}, utcnow()) is None  # no history, no guess
    assert stats.eta_seconds(build | {"finished_at": "x"}, medians, utcnow()) is None
