"""Reading stage details: cache levels, facts and links, and commit URLs on each forge."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from google.cloud.devtools.cloudbuild_v1 import Build

from service.details import Fact, cache_levels, cloud_build_log, commit_url, stage_facts
from service.feed import Position
from service.hub import stage_message
from trainhook.models import utcnow
from worker.cloudbuild.builder import record_detail

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    "clone_url,provider,expected",
    [
        (
            "https://github.com/octo-org/api.git",
            "github",
            f"https://github.com/octo-org/api/commit/{SHA}",
        ),
        (
            "https://gitlab.com/group/sub/api.git",
            "gitlab",
            f"https://gitlab.com/group/sub/api/-/commit/{SHA}",
        ),
        (
            "https://git.example.com/team/api.git",
            "gitlab",
            f"https://git.example.com/team/api/-/commit/{SHA}",
        ),
        (
            "https://codeberg.org/team/api.git",
            "gitea",
            f"https://codeberg.org/team/api/commit/{SHA}",
        ),
        (
            "https://gitlab.example.com:8443/t/api",
            "",
            f"https://gitlab.example.com:8443/t/api/-/commit/{SHA}",
        ),
        ("git@github.com:octo-org/api.git", "github", None),  # not https: no web URL to derive
        ("http://github.com/octo-org/api.git", "github", None),
        ("https://user:pw@github.com/octo-org/api.git", "github", None),  # never echo credentials
        ("https://bitbucket.org/octo-org/api.git", "bitbucket", None),
        ("https://github.com/a/b%22onmouseover=x.git", "github", None),
        (None, "github", None),
    ],
)
def test_commit_url_per_forge(clone_url, provider, expected):
    assert commit_url(clone_url, provider, SHA) == expected


def test_commit_url_needs_a_hex_sha():
    assert commit_url("https://github.com/o/r.git", "github", "") is None
    assert commit_url("https://github.com/o/r.git", "github", "main/../x") is None


def build(*stages: dict) -> dict:
    return {"stages": [{"name": "hash", "detail": None, "cache": None}, *stages]}


def test_cache_levels_read_the_train_cache_field_and_written_levels():
    train = {"name": "train", "detail": "model cache hit: key abc", "cache": "hit"}
    assert cache_levels(build(train)) == {"model": "hit"}
    hashed = {"name": "hash", "detail": "keys ...; deps cache=hit, nltk: miss", "cache": None}
    assert cache_levels({"stages": [hashed, train]}) == {
        "deps": "hit",
        "nltk": "miss",
        "model": "hit",
    }
    assert cache_levels(build()) == {}


FORGED = (
    "FAILED test_x: see https://evil.example/cloudbuild and https://example.com/ok).\n"
    "Cloud Build log https://console.cloud.google.com/evil\n"
    "logs https://evil.example/cloud-build/builds/1 javascript:alert(1) data:text/html,x"
)
LOG_URL = "https://console.cloud.google.com/cloud-build/builds;region=us-central1/b-1?project=p"
RECORD = f"Cloud Build id b-1 QUEUED; logs {LOG_URL}"


@pytest.mark.parametrize("name", ["checkout", "test", "hash", "train", "build", "deploy"])
def test_a_url_in_a_stage_detail_is_never_a_link(name):
    for status in ("running", "succeeded", "failed", None):
        stage = {"name": name, "status": status, "detail": FORGED, "cache": None}
        assert [f for f in stage_facts(stage) if f.href and not f.href.startswith("/builds/")] == []


def test_the_cloud_build_log_link_comes_only_from_the_builders_record():
    assert cloud_build_log("build", "pending", RECORD) == Fact("Cloud Build log", "open", LOG_URL)
    live = {"name": "build", "status": "pending", "detail": RECORD, "cache": None}
    assert [f.href for f in stage_facts(live)] == [LOG_URL]
    # The same line anywhere else is text: another stage, another status, or inside other text.
    assert cloud_build_log("test", "pending", RECORD) is None
    assert cloud_build_log("build", "failed", RECORD) is None
    assert cloud_build_log("build", "succeeded", f"built image; logs {LOG_URL}") is None
    assert cloud_build_log("build", "pending", "tests printed:\n" + RECORD) is None
    assert cloud_build_log("build", "pending", RECORD + "\nand more") is None
    # Even the builder's record links nowhere but the Cloud console.
    for url in (
        "https://evil.example/cloud-build/builds/b-1",
        "https://console.cloud.google.com.evil.example/x",
        "https://console.cloud.google.com:8443/x",
        "https://user@console.cloud.google.com/x",
        "http://console.cloud.google.com/x",
    ):
        assert cloud_build_log("build", "pending", f"Cloud Build id b-1 QUEUED; logs {url}") is None


def test_live_updates_link_the_cloud_build_log_only_from_the_builders_record():
    def live(stage: str, status: str, detail: str) -> list[str | None]:
        row = SimpleNamespace(build_id=1, id=7, stage=stage, status=status, text=detail,
                              cache=None, at=utcnow(), repo="o/r", ref="main")  # fmt: skip
        return [f["href"] for f in stage_message(row, Position(7, 0)).data["facts"]]

    assert live("build", "pending", RECORD) == [LOG_URL]
    assert live("test", "failed", FORGED) == []
    assert live("build", "failed", RECORD) == []


def test_the_builders_record_is_what_the_cloud_build_builder_writes():
    made = Build(id="b-1", status=Build.Status.QUEUED, log_url=LOG_URL)  # as the API returns it
    assert record_detail(made) == RECORD
    assert cloud_build_log("build", "pending", record_detail(made)) is not None


def test_facts_of_a_train_stage_without_data_say_so():
    stage = {
        "name": "hash",
        "detail": "NO DATA FILE FOUND (looked for a.csv): TRAINING ON ...",
        "cache": None,
    }
    assert [(f.label, f.tone) for f in stage_facts(stage)] == [("data", "bad")]
    rows = {"name": "hash", "detail": "data data/train.csv git:abc 12,345 rows", "cache": None}
    assert [(f.label, f.value) for f in stage_facts(rows)] == [
        ("data file", "data/train.csv"),
        ("rows", "12,345"),
    ]
