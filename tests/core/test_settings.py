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
        ("TRAINHOOK_BUILDER", "kaniko"),
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


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("TRAINHOOK_LEASE_SECONDS", "-5", "a duration"),
        ("TRAINHOOK_MAX_ATTEMPTS", "0", "a whole number of attempts, from 1 to 100"),
        ("TRAINHOOK_MAX_ATTEMPTS", "2.9", "a whole number of attempts"),
        ("TRAINHOOK_POLL_INTERVAL", "nan", "more than 0s to 1m"),
        ("TRAINHOOK_POLL_INTERVAL", "inf", "a duration"),
        ("TRAINHOOK_BODY_LIMIT", "0", "a size"),
        ("TRAINHOOK_VENV_KEEP", "0", "from 1 to 1000"),
        ("TRAINHOOK_TRAIN_TIMEOUT", "0", "more than 0s"),
        ("TRAINHOOK_WORKER_PORT", "70000", "a TCP port"),
        ("TRAINHOOK_SANDBOX_PROCESSES", "4", "from 8"),
        ("TRAINHOOK_LOG_FORMAT", "xml", "'text' or 'json'"),
    ],
)
def test_nonsense_numbers_are_refused_naming_variable_value_and_range(
    tmp_path: Path, name: str, value: str, expected: str
):
    config = write(tmp_path, GOOD)
    with pytest.raises(ConfigError) as info:
        load_settings({"TRAINHOOK_CONFIG": str(config), name: value})
    message = str(info.value)
    assert f"{name}={value!r}: expected" in message
    assert expected in message


@pytest.mark.parametrize(
    ("value", "seconds"), [("300", 300.0), ("300s", 300.0), ("5m", 300.0), ("1h30m", 5400.0)]
)
def test_durations_accept_seconds_and_units(tmp_path: Path, value: str, seconds: float):
    config = write(tmp_path, GOOD)
    settings = load_settings({"TRAINHOOK_CONFIG": str(config), "TRAINHOOK_LEASE_SECONDS": value})
    assert settings.lease_seconds == seconds


def test_sizes_accept_units_and_counts_stay_whole(tmp_path: Path):
    config = write(tmp_path, GOOD)
    settings = load_settings(
        {
            "TRAINHOOK_CONFIG": str(config),
            "TRAINHOOK_BODY_LIMIT": "10M",
            "TRAINHOOK_MAX_ATTEMPTS": "4",
        }
    )
    assert settings.body_limit == 10 * 1024 * 1024 and isinstance(settings.body_limit, int)
    assert settings.max_attempts == 4 and isinstance(settings.max_attempts, int)


def test_every_problem_in_environment_and_file_is_reported_at_once(tmp_path: Path):
    second = GOOD.replace("octo-org/social-score-api", "octo-org/other")
    config = write(
        tmp_path,
        GOOD.replace('branches = ["main", "release/*"]', 'branches = "main"')
        + second.replace('provider = "github"', 'provider = "github"\nbranchs = ["x"]').replace(
            "min_macro_f1", "x"
        )
        + "min_macro_f1 = 1.5\n",
    )
    with pytest.raises(ConfigError) as info:
        load_settings(
            {
                "TRAINHOOK_CONFIG": str(config),
                "TRAINHOOK_LEASE_SECONDS": "-5",
                "TRAINHOOK_MAX_ATTEMPTS": "0",
                "TRAINHOOK_QUEUE": "redis",
                "TRAINHOOK_SANDBOX_MEMORY": "1K",
                "TRAINHOOK_SANDBOX_DISK": "lots",
            }
        )
    lines = info.value.problems
    assert len(lines) == 8, lines
    message = str(info.value)
    assert "(8 problems)" in message
    for variable in ("LEASE_SECONDS='-5'", "MAX_ATTEMPTS='0'", "QUEUE='redis'"):
        assert f"TRAINHOOK_{variable}: expected" in message
    assert "TRAINHOOK_SANDBOX_MEMORY='1K'" in message and "TRAINHOOK_SANDBOX_DISK" in message
    assert (
        f"{config}: repository 'octo-org/social-score-api': key 'branches' has the wrong type: "
        "got 'main' (string), expected a list of strings" in message
    )
    assert (
        f"{config}: repository 'octo-org/other': unknown key 'branchs' = ['x']; "
        "did you mean 'branches'?" in message
    )
    assert (
        f"{config}: repository 'octo-org/other': key 'min_macro_f1': got 1.5, "
        "expected a number from 0 to 1" in message
    )


def test_problems_inside_one_repository_table_are_all_named(tmp_path: Path):
    config = write(
        tmp_path,
        GOOD.replace('provider = "github"', 'provider = "svn"')
        .replace('"data/prod.csv"', '"../outside.csv"')
        .replace("https://github.com", "ext::sh -c x")
        + 'sandbox_limits = { memory = "1K", processes = 2, swap = 1 }\n',
    )
    with pytest.raises(ConfigError) as info:
        load_repos(config)
    message = str(info.value)
    for part in (
        "key 'provider': 'svn': expected one of",
        "key 'data': '../outside.csv'",
        "key 'clone_url'",
        "key 'sandbox_limits': memory = '1K' is out of range; expected a size",
        "key 'sandbox_limits': processes = 2 is out of range; expected a whole number of "
        "processes, from 8",
        "key 'sandbox_limits': unknown limit 'swap'",
    ):
        assert part in message
    assert len(info.value.problems) == 6


@pytest.mark.parametrize(
    ("timeout", "seconds"), [("300", 300), ('"300s"', 300), ('"5m"', 300), ("600", 600)]
)
def test_deploy_timeout_accepts_seconds_and_durations(tmp_path: Path, timeout: str, seconds: int):
    deploy = (
        'image = "europe-west1-docker.pkg.dev/octo-project/models/app"\n[repos.deploy]\n'
        f'cluster = "ml"\nlocation = "europe-west1"\ndeployment = "app"\ntimeout = {timeout}\n'
    )
    repo = load_repos(write(tmp_path, GOOD + deploy))[0]
    assert repo.deploy is not None and repo.deploy.timeout == seconds


def test_every_bad_deploy_key_is_named_at_once(tmp_path: Path):
    deploy = (
        '[repos.deploy]\ncluster = "ML"\nlocation = "europe-west1"\ntimeout = "3h"\nreplicas = 3\n'
    )
    with pytest.raises(ConfigError) as info:
        load_repos(write(tmp_path, GOOD + deploy))
    message = str(info.value)
    for part in (
        "key 'deploy.cluster': 'ML': expected a Kubernetes/GKE name",
        "key 'deploy.timeout': '3h': expected a duration",
        "unknown key 'deploy.replicas' = 3",
        "missing required key 'deploy.deployment'",
    ):
        assert part in message
