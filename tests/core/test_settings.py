"""Settings and the repositories file: validated at start, errors name file, repo and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainhook.errors import ConfigError
from trainhook.repos import load_repos
from trainhook.settings import load_settings

GOOD = """
[[repos]]
name = "octo-org/social-score-api"
provider = "github"
clone_url = "https://github.com/octo-org/social-score-api.git"
branches = ["main", "release/*"]
secret_env = "GITHUB_WEBHOOK_SECRET"
data = ["data/cleaned_training_sample.csv", "data/prod.csv", "data/train.csv"]
test_command = "python -m pytest -q"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trainhook.toml"
    path.write_text(text)
    return path


def test_defaults_follow_the_contract(tmp_path: Path):
    config = write(tmp_path, GOOD)
    settings = load_settings(
        {"TRAINHOOK_HOME": str(tmp_path / "h"), "TRAINHOOK_CONFIG": str(config)}
    )
    assert settings.database_url == f"sqlite:///{tmp_path / 'h' / 'trainhook.db'}"
    assert settings.artifacts == str(tmp_path / "h" / "artifacts")
    assert (settings.queue, settings.builder, settings.env) == ("sql", "local", "dev")
    assert settings.api_token is None
    assert settings.body_limit == 25 * 1024 * 1024
    repo = settings.repos[0]
    assert repo.wants_branch("main") and repo.wants_branch("release/2.0")
    assert not repo.wants_branch("feature")


def test_secret_comes_from_the_named_variable_and_is_not_in_repr(tmp_path: Path):
    config = write(tmp_path, GOOD)
    settings = load_settings(
        {"TRAINHOOK_CONFIG": str(config), "GITHUB_WEBHOOK_SECRET": "s3cret-value"}
    )
    assert settings.secret_for(settings.repos[0]) == "s3cret-value"
    assert "s3cret-value" not in repr(settings)


@pytest.mark.parametrize(
    "text,words",
    [
        (
            GOOD.replace('provider = "github"', 'provider = "github"\ncolour = "red"'),
            ["'colour'", "octo-org/social-score-api"],
        ),
        (
            GOOD.replace('secret_env = "GITHUB_WEBHOOK_SECRET"\n', ""),
            ["'secret_env'", "octo-org/social-score-api"],
        ),
        (GOOD.replace('name = "octo-org/social-score-api"\n', ""), ["'name'", "#1"]),
        (GOOD.replace('branches = ["main", "release/*"]', 'branches = "main"'), ["'branches'"]),
        (GOOD.replace('provider = "github"', 'provider = "svn"'), ["'provider'"]),
        (GOOD.replace("https://github.com", "ext::sh -c touch% /tmp/pwned"), ["clone_url"]),
        (GOOD.replace('"data/prod.csv"', '"../outside.csv"'), ["'data'", "../outside.csv"]),
        (GOOD.replace('"data/prod.csv"', '"/etc/passwd"'), ["'data'"]),
        (GOOD + GOOD, ["configured twice"]),
        ("repos = 3", ["array of tables"]),
        ("[[repos]\n", ["not valid TOML"]),
        ("[other]\nx = 1\n", ["'other'"]),
    ],
    ids=[
        "unknown-key",
        "missing-secret",
        "missing-name",
        "wrong-type",
        "bad-provider",
        "ext-transport",
        "dotdot-data",
        "absolute-data",
        "duplicate",
        "not-array",
        "bad-toml",
        "unknown-top-level",
    ],
)
def test_bad_repositories_file_names_file_repo_and_key(tmp_path: Path, text: str, words):
    config = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_repos(config)
    message = str(info.value)
    assert str(config) in message
    for word in words:
        assert word in message


def test_missing_repositories_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings({"TRAINHOOK_CONFIG": str(tmp_path / "nope.toml")})


@pytest.mark.parametrize(
    "name,value",
    [
        ("TRAINHOOK_QUEUE", "redis"),
        ("TRAINHOOK_BUILDER", "docker"),
        ("TRAINHOOK_ENV", "staging"),
        ("TRAINHOOK_LEASE_SECONDS", "soon"),
    ],
)
def test_bad_variables_are_named(tmp_path: Path, name: str, value: str):
    config = write(tmp_path, GOOD)
    with pytest.raises(ConfigError, match=name):
        load_settings({"TRAINHOOK_CONFIG": str(config), name: value})


def test_prod_refuses_insecure_defaults_listing_each(tmp_path: Path):
    config = write(tmp_path, GOOD)
    with pytest.raises(ConfigError) as info:
        load_settings({"TRAINHOOK_CONFIG": str(config), "TRAINHOOK_ENV": "prod"})
    message = str(info.value)
    assert "TRAINHOOK_API_TOKEN" in message
    assert "SQLite" in message
    assert "GITHUB_WEBHOOK_SECRET" in message


def test_prod_starts_with_secure_settings(tmp_path: Path):
    config = write(tmp_path, GOOD)
    settings = load_settings(
        {
            "TRAINHOOK_CONFIG": str(config),
            "TRAINHOOK_ENV": "prod",
            "TRAINHOOK_API_TOKEN": "a-long-enough-token-123",
            "TRAINHOOK_DATABASE_URL": "postgresql+psycopg://u@db/trainhook",
            "GITHUB_WEBHOOK_SECRET": "x",
        }
    )
    assert settings.env == "prod"


def test_scp_style_clone_url_is_accepted(tmp_path: Path):
    config = write(tmp_path, GOOD.replace("https://github.com/", "git@github.com:"))
    assert load_repos(config)[0].clone_url.startswith("git@github.com:")
