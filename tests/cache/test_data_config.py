"""Repository configuration read by the cache: gs:// data entries and training params."""

from __future__ import annotations

import pytest

from trainhook.errors import ConfigError


def test_gs_objects_may_be_listed_as_data(make_settings):
    settings = make_settings(extra='data = ["gs://ml-data/tweets/v3.csv", "data/train.csv"]')
    assert settings.repos[0].data == ("gs://ml-data/tweets/v3.csv", "data/train.csv")


@pytest.mark.parametrize(
    "entry,message",
    [
        ("gs://Bad_Bucket/x.csv", "not a valid bucket name"),
        ("gs://ml-data", "must name an object"),
        ("gs://ml-data/folder/", "must name an object"),
        ("/etc/passwd", "relative path inside the repo or gs://"),
        ("s3://bucket/x.csv", "only gs:// URLs are supported"),
    ],
)
def test_bad_data_entries_are_refused_naming_the_key(make_settings, entry, message):
    with pytest.raises(ConfigError, match=message) as caught:
        make_settings(extra=f'data = ["{entry}"]')
    assert "key 'data'" in str(caught.value)


def test_training_params_are_validated_at_start_and_include_the_columns(make_settings):
    repo = make_settings(
        extra='text_column = "body"\nparams = { stopwords = true, C = 0.5 }'
    ).repos[0]
    assert repo.train_params == {
        "stopwords": True,
        "C": 0.5,
        "text_column": "body",
        "label_column": "label",
    }
    with pytest.raises(ConfigError, match=r"key 'params': unknown training parameter\(s\): nope"):
        make_settings(extra="params = { nope = 1 }")
    with pytest.raises(ConfigError, match="key 'params': set 'text_column' as a key of its own"):
        make_settings(extra='params = { text_column = "x" }')
    with pytest.raises(ConfigError, match="key 'params': invalid training parameters: need C > 0"):
        make_settings(extra="params = { C = -1 }")


def test_a_gs_artifacts_location_is_checked_at_start(make_settings):
    settings = make_settings(env={"TRAINHOOK_ARTIFACTS": "gs://team-cache/trainhook"})
    assert settings.artifacts == "gs://team-cache/trainhook"
    assert settings.artifacts_path == settings.home / "artifacts"  # local files stay local
    with pytest.raises(ConfigError, match=r"TRAINHOOK_ARTIFACTS: .*not a valid bucket name"):
        make_settings(env={"TRAINHOOK_ARTIFACTS": "gs://"})
