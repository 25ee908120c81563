"""Reading stage details: cache levels, facts and links, and commit URLs on each forge."""

from __future__ import annotations

import pytest

from service.details import cache_levels, commit_url, stage_facts

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


def test_facts_link_only_https_urls_and_builds():
    stage = {
        "name": "build",
        "detail": "see https://console.cloud.google.com/cloud-build/builds/1?project=p, "
        "javascript:alert(1) data:text/html,x http://insecure.example/x https://example.com/ok).",
        "cache": None,
    }
    hrefs = [f.href for f in stage_facts(stage) if f.href]
    assert hrefs == [
        "https://console.cloud.google.com/cloud-build/builds/1?project=p",
        "https://example.com/ok",
    ]


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
