"""Settings: built from the environment by one function, never at import time."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainhook.cloudsettings import check_cloudbuild, cloudbuild_env
from trainhook.errors import ConfigError
from trainhook.gcs import parse_gs_url
from trainhook.repos import RepoConfig, load_repos
from trainhook.sandboxsettings import SandboxLimits, sandbox_env

DEFAULT_BODY_LIMIT = 25 * 1024 * 1024  # GitHub caps webhook payloads at 25 MiB


@dataclass(frozen=True)
class Settings:
    """Everything the service and the worker read from their environment."""

    home: Path
    # Out of repr (as `secrets` below): the URL may carry a password, the token is one, and
    # a repr ends up in debug logs and tracebacks.
    database_url: str = field(repr=False)
    config_path: Path
    queue: str
    artifacts: str
    builder: str
    env: str
    api_token: str | None = field(repr=False)
    repos: tuple[RepoConfig, ...]
    secrets: Mapping[str, str] = field(repr=False, default_factory=dict)
    body_limit: int = DEFAULT_BODY_LIMIT
    # Slow clients: a request head must arrive within header_timeout seconds, a webhook
    # body within body_timeout (else 408 and the connection is closed).
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    lease_seconds: float = 60.0
    poll_interval: float = 0.5
    max_attempts: int = 3
    train_timeout: float = 1800.0
    test_timeout: float = 900.0
    public_url: str = ""
    reconcile_interval: float = 0.0  # seconds between missed-delivery checks; 0: off
    nltk_index: str | None = None  # NLTK data index URL (TRAINHOOK_NLTK_INDEX); None: NLTK's
    venv_keep: int = 5  # test venvs (`test_env = "venv"`) kept, most recently used first
    # What repository code may use in its sandbox (TRAINHOOK_SANDBOX_*), and the host paths
    # every sandbox also sees read-only (TRAINHOOK_SANDBOX_PATHS).
    sandbox_limits: SandboxLimits = field(default_factory=SandboxLimits)
    sandbox_paths: tuple[Path, ...] = ()
    # Pub/Sub (TRAINHOOK_QUEUE=pubsub). Empty dead-letter names mean "<topic>-dead" and
    # "<subscription>-dead" (see the properties below).
    pubsub_project: str = ""
    pubsub_topic: str = "trainhook-jobs"
    pubsub_subscription: str = "trainhook-worker"
    pubsub_dead_letter_topic: str = ""
    pubsub_dead_letter_subscription: str = ""
    pubsub_max_deliveries: int = 20
    pubsub_publish_timeout: float = 10.0
    pubsub_sweep_seconds: float = 10.0
    pubsub_pull_seconds: float = 5.0
    # A job runnable this long with nobody claiming it has lost its message (say Pub/Sub
    # lost its state): the outbox sweep publishes it again. 0: never.
    pubsub_republish_seconds: float = 600.0
    # Cloud Build (TRAINHOOK_BUILDER=cloudbuild; see trainhook/cloudsettings.py)
    gcp_project: str | None = None
    gcp_region: str | None = None
    source_bucket: str | None = None  # gs://bucket[/prefix] where source bundles go
    cloudbuild_endpoint: str | None = None  # http://host:port: REST, anonymous (fakes)
    cloudbuild_timeout: float = 3600.0
    cloudbuild_queue_ttl: float = 3600.0
    cloudbuild_poll_interval: float = 5.0
    cloudbuild_service_account: str | None = None

    def repo(self, name: str, provider: str | None = None) -> RepoConfig | None:
        """The configured repository with this full name (and provider), or None."""
        for repo in self.repos:
            if repo.name == name and (provider is None or repo.provider == provider):
                return repo
        return None

    def secret_for(self, repo: RepoConfig) -> str | None:
        """The webhook secret of a repository, read from its `secret_env` variable."""
        return self.secrets.get(repo.secret_env) or None

    def forge_token(self, repo: RepoConfig) -> str | None:
        """The forge API token of a repository, read from its `forge_token_env` variable."""
        return self.secrets.get(repo.forge_token_env or "") or None

    @property
    def dead_letter_topic(self) -> str:
        return self.pubsub_dead_letter_topic or f"{self.pubsub_topic}-dead"

    @property
    def dead_letter_subscription(self) -> str:
        return self.pubsub_dead_letter_subscription or f"{self.pubsub_subscription}-dead"

    @property
    def artifacts_path(self) -> Path:
        """The local artifacts directory: TRAINHOOK_ARTIFACTS, or `$TRAINHOOK_HOME/artifacts`
        when that is a gs:// URL (the cache entries are then in the bucket; local files such
        as the local builder's bundles stay on this machine)."""
        if self.artifacts.startswith("gs://"):
            return self.home / "artifacts"
        return Path(self.artifacts)

    @property
    def mirrors_dir(self) -> Path:
        return self.home / "mirrors"

    @property
    def work_dir(self) -> Path:
        return self.home / "work"

    @property
    def venvs_dir(self) -> Path:
        """Where the test stage keeps its virtual environments, one per deps key."""
        return self.home / "venvs"


PUBSUB_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9._~+%-]{2,254}$")


def _pubsub_settings(env: Mapping[str, str], queue: str, attempts: int) -> dict[str, Any]:
    """The TRAINHOOK_PUBSUB_* fields; with the pubsub queue, a project is required and every
    name must be one Pub/Sub accepts (3-255 characters, starting with a letter)."""
    project = env.get("TRAINHOOK_PUBSUB_PROJECT") or env.get("GOOGLE_CLOUD_PROJECT") or ""
    names = {
        "pubsub_topic": env.get("TRAINHOOK_PUBSUB_TOPIC") or "trainhook-jobs",
        "pubsub_subscription": env.get("TRAINHOOK_PUBSUB_SUBSCRIPTION") or "trainhook-worker",
        "pubsub_dead_letter_topic": env.get("TRAINHOOK_PUBSUB_DEAD_LETTER_TOPIC") or "",
        "pubsub_dead_letter_subscription": env.get("TRAINHOOK_PUBSUB_DEAD_LETTER_SUBSCRIPTION")
        or "",
    }
    deliveries = int(_float(env, "TRAINHOOK_PUBSUB_MAX_DELIVERIES", 20))
    if queue == "pubsub":
        if not project:
            raise ConfigError(
                "TRAINHOOK_QUEUE=pubsub needs TRAINHOOK_PUBSUB_PROJECT (or GOOGLE_CLOUD_PROJECT)"
            )
        for field_name, value in names.items():
            if value and not PUBSUB_NAME.match(value):
                var = "TRAINHOOK_" + field_name.upper()
                raise ConfigError(
                    f"{var}={value!r} is not a Pub/Sub name (3-255 characters: letters, "
                    "digits and . _ ~ + % -, starting with a letter)"
                )
        if not 5 <= deliveries <= 100:
            raise ConfigError(f"TRAINHOOK_PUBSUB_MAX_DELIVERIES={deliveries}: Pub/Sub allows 5-100")
        if deliveries <= attempts:
            # The worker's own count must decide; Pub/Sub's policy is the backstop for jobs
            # that never get to fail (they kill the worker), and duplicates count too.
            raise ConfigError(
                f"TRAINHOOK_PUBSUB_MAX_DELIVERIES={deliveries} must be above "
                f"TRAINHOOK_MAX_ATTEMPTS={attempts}"
            )
    return {
        "pubsub_project": project,
        **names,
        "pubsub_max_deliveries": deliveries,
        "pubsub_publish_timeout": _float(env, "TRAINHOOK_PUBSUB_PUBLISH_TIMEOUT", 10.0),
        "pubsub_sweep_seconds": _float(env, "TRAINHOOK_PUBSUB_SWEEP_SECONDS", 10.0),
        "pubsub_pull_seconds": _float(env, "TRAINHOOK_PUBSUB_PULL_SECONDS", 5.0),
        "pubsub_republish_seconds": _float(env, "TRAINHOOK_PUBSUB_REPUBLISH_SECONDS", 600.0),
    }


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None


def _venv_keep(env: Mapping[str, str]) -> int:
    raw = env.get("TRAINHOOK_VENV_KEEP") or "5"
    try:
        keep = int(raw)
    except ValueError:
        raise ConfigError(f"TRAINHOOK_VENV_KEEP={raw!r} is not a whole number") from None
    if keep < 1:
        # The venv a build is about to use must survive its own prune.
        raise ConfigError(f"TRAINHOOK_VENV_KEEP={keep}: keep at least 1 venv")
    return keep


def load_settings(env: Mapping[str, str] | None = None, *, require_repos: bool = True) -> Settings:
    """Build settings from `env` (default: the process environment).

    Raises ConfigError with a message naming the variable, file, repository or key at fault.
    """
    env = dict(os.environ if env is None else env)
    home = Path(env.get("TRAINHOOK_HOME") or "./.trainhook").expanduser().absolute()
    database_url = env.get("TRAINHOOK_DATABASE_URL") or f"sqlite:///{home / 'trainhook.db'}"
    config_path = Path(env.get("TRAINHOOK_CONFIG") or "./trainhook.toml").expanduser().absolute()
    queue = env.get("TRAINHOOK_QUEUE") or "sql"
    builder = env.get("TRAINHOOK_BUILDER") or "local"
    mode = env.get("TRAINHOOK_ENV") or "dev"
    artifacts = env.get("TRAINHOOK_ARTIFACTS") or str(home / "artifacts")
    token = env.get("TRAINHOOK_API_TOKEN") or None

    if queue not in ("sql", "pubsub"):
        raise ConfigError(f"TRAINHOOK_QUEUE={queue!r}: expected 'sql' or 'pubsub'")
    if artifacts.startswith("gs://"):
        try:
            parse_gs_url(artifacts)
        except ValueError as exc:
            raise ConfigError(f"TRAINHOOK_ARTIFACTS: {exc} (expected gs://bucket/prefix)") from None
    if builder not in ("local", "cloudbuild"):
        raise ConfigError(f"TRAINHOOK_BUILDER={builder!r}: expected 'local' or 'cloudbuild'")
    if mode not in ("dev", "prod"):
        raise ConfigError(f"TRAINHOOK_ENV={mode!r}: expected 'dev' or 'prod'")

    repos = load_repos(config_path) if config_path.exists() or require_repos else ()

    secrets = {r.secret_env: env[r.secret_env] for r in repos if env.get(r.secret_env)}
    secrets.update({e: env[e] for r in repos if (e := r.forge_token_env) and env.get(e)})
    max_attempts = int(_float(env, "TRAINHOOK_MAX_ATTEMPTS", 3))
    settings = Settings(
        home=home,
        database_url=database_url,
        config_path=config_path,
        queue=queue,
        artifacts=artifacts,
        builder=builder,
        env=mode,
        api_token=token,
        repos=repos,
        secrets=secrets,
        body_limit=int(_float(env, "TRAINHOOK_BODY_LIMIT", DEFAULT_BODY_LIMIT)),
        header_timeout=_float(env, "TRAINHOOK_HEADER_TIMEOUT", 10.0),
        body_timeout=_float(env, "TRAINHOOK_BODY_TIMEOUT", 60.0),
        lease_seconds=_float(env, "TRAINHOOK_LEASE_SECONDS", 60.0),
        poll_interval=_float(env, "TRAINHOOK_POLL_INTERVAL", 0.5),
        max_attempts=max_attempts,
        train_timeout=_float(env, "TRAINHOOK_TRAIN_TIMEOUT", 1800.0),
        test_timeout=_float(env, "TRAINHOOK_TEST_TIMEOUT", 900.0),
        public_url=(env.get("TRAINHOOK_PUBLIC_URL") or "").rstrip("/"),
        reconcile_interval=_float(env, "TRAINHOOK_RECONCILE_INTERVAL", 0.0),
        nltk_index=env.get("TRAINHOOK_NLTK_INDEX") or None,
        venv_keep=_venv_keep(env),
        **sandbox_env(env),
        **_pubsub_settings(env, queue, max_attempts),
        **cloudbuild_env(env, _float),
    )
    if builder == "cloudbuild":
        check_cloudbuild(settings)
    if mode == "prod":
        refuse_insecure_defaults(settings)
    return settings


def refuse_insecure_defaults(settings: Settings) -> None:
    """In prod, refuse to start with a missing secret, no API token or SQLite."""
    problems = []
    if settings.api_token is None:
        problems.append("TRAINHOOK_API_TOKEN is not set (POST /rebuild would be unusable)")
    elif len(settings.api_token) < 16:
        problems.append("TRAINHOOK_API_TOKEN is shorter than 16 characters")
    if settings.database_url.startswith("sqlite"):
        problems.append("TRAINHOOK_DATABASE_URL is SQLite; use PostgreSQL in prod")
    for repo in settings.repos:
        if not settings.secret_for(repo):
            problems.append(
                f"repository {repo.name!r}: secret variable {repo.secret_env} is not set"
            )
    if problems:
        raise ConfigError(
            "TRAINHOOK_ENV=prod refuses insecure defaults:\n  - " + "\n  - ".join(problems)
        )
