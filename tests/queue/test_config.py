"""Pub/Sub settings (contract names and defaults) and their checks at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainhook.errors import ConfigError
from trainhook.settings import load_settings


def settings(tmp_path: Path, **env: str):
    base = {"TRAINHOOK_HOME": str(tmp_path / "h"), "TRAINHOOK_CONFIG": str(tmp_path / "none")}
    return load_settings({**base, **env}, require_repos=False)


def test_defaults_follow_the_contract(tmp_path: Path):
    s = settings(tmp_path, TRAINHOOK_QUEUE="pubsub", TRAINHOOK_PUBSUB_PROJECT="acme-ml")
    assert (s.pubsub_project, s.pubsub_topic, s.pubsub_subscription) == (
        "acme-ml",
        "trainhook-jobs",
        "trainhook-worker",
    )
    assert (s.dead_letter_topic, s.dead_letter_subscription) == (
        "trainhook-jobs-dead",
        "trainhook-worker-dead",
    )
    assert s.pubsub_max_deliveries == 20


def test_google_cloud_project_is_the_fallback(tmp_path: Path):
    s = settings(tmp_path, TRAINHOOK_QUEUE="pubsub", GOOGLE_CLOUD_PROJECT="from-gcloud")
    assert s.pubsub_project == "from-gcloud"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({}, "TRAINHOOK_PUBSUB_PROJECT"),
        ({"TRAINHOOK_PUBSUB_TOPIC": "j"}, "TRAINHOOK_PUBSUB_TOPIC='j'"),
        ({"TRAINHOOK_PUBSUB_SUBSCRIPTION": "9lives"}, "TRAINHOOK_PUBSUB_SUBSCRIPTION"),
        ({"TRAINHOOK_PUBSUB_MAX_DELIVERIES": "200"}, "5-100"),
        ({"TRAINHOOK_PUBSUB_MAX_DELIVERIES": "5", "TRAINHOOK_MAX_ATTEMPTS": "5"}, "above"),
    ],
)
def test_bad_pubsub_settings_are_refused_naming_the_variable(tmp_path: Path, env, names):
    project = {} if not env else {"TRAINHOOK_PUBSUB_PROJECT": "acme-ml"}
    with pytest.raises(ConfigError, match=names):
        settings(tmp_path, TRAINHOOK_QUEUE="pubsub", **project, **env)


def test_the_sql_queue_needs_no_pubsub_settings(tmp_path: Path):
    assert settings(tmp_path, TRAINHOOK_PUBSUB_TOPIC="x").queue == "sql"
