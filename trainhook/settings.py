"""Settings: built from the environment by one function, never at import time."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainhook.cloudsettings import cloudbuild_env, cloudbuild_problems
from trainhook.configcheck import Number, Problems, env_number
from trainhook.gcs import parse_gs_url
from trainhook.repos import RepoConfig, read_repos
from trainhook.sandboxsettings import SandboxLimits, limits_from_env, sandbox_paths_from_env

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
    # Data changes in Cloud Storage (trainhook/dataevents.py): the topic the buckets'
    # notifications publish to, and the subscription the service pulls them from. Used with
    # either queue, whenever a repository's `data` names a gs:// object and a project is set.
    pubsub_data_topic: str = "trainhook-data"
    pubsub_data_subscription: str = "trainhook-data-service"
    # Cloud Build (TRAINHOOK_BUILDER=cloudbuild; see trainhook/cloudsettings.py)
    gcp_project: str | None = None
    gcp_region: str | None = None
    source_bucket: str | None = None  # gs://bucket[/prefix] where source bundles go
    cloudbuild_endpoint: str | None = None  # http://host:port: REST, anonymous (fakes)
    cloudbuild_timeout: float = 3600.0
    cloudbuild_queue_ttl: float = 3600.0
    cloudbuild_poll_interval: float = 5.0
    cloudbuild_service_account: str | None = None
    log_format: str = "text"  # TRAINHOOK_LOG_FORMAT: text | json (json by default in prod)
    worker_port: int = -1  # TRAINHOOK_WORKER_PORT: the worker's own HTTP; -1: not served
    # Who may read the dashboard (service/access.py): public | token | proxy; public by
    # default in dev, token in prod (where public needs TRAINHOOK_DASHBOARD_PUBLIC=1).
    dashboard_access: str = "public"
    dashboard_public: bool = False  # TRAINHOOK_DASHBOARD_PUBLIC=1: public in prod on purpose
    iap_audience: str | None = None  # TRAINHOOK_IAP_AUDIENCE: verify the IAP JWT for it
    metrics_access: str = "public"  # TRAINHOOK_METRICS_ACCESS: public | dashboard
    # Container builders (TRAINHOOK_BUILDER=local|docker|podman): where images are pushed
    # (None: a registry `trainhook up` starts on loopback), the build arg BASE_IMAGE (None:
    # the Dockerfile's default), a CA bundle mounted into builds (a TLS-inspecting proxy).
    registry: str | None = None
    base_image: str | None = None
    build_ca_bundle: Path | None = None

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
LOG_FORMATS = ("text", "json")
ACCESS_MODES = ("public", "token", "proxy")
# `local` picks docker, else podman, else `bundle` (no image, nothing served).
BUILDERS = ("local", "docker", "podman", "bundle", "cloudbuild")
# host[:port][/path]: where images are pushed as <registry>/<repo slug>.
REGISTRY_RE = re.compile(r"^[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:/[a-z0-9._/-]+)?$")
IMAGE_REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]*$")
METRICS_ACCESS = ("public", "dashboard")
HOUR, DAY = 3600.0, 86400.0

# Every numeric variable: its field, kind and unit, range and default. Durations accept
# 300, "300s", "5m"; sizes accept bytes or K/M/G/T. A value out of range is refused at
# start, never clamped (a lease of -5 s or 0 attempts is a typo, not a wish).
NUMBERS: dict[str, tuple[str, Number, float]] = {
    "TRAINHOOK_BODY_LIMIT": ("body_limit", Number("size", 1024, 1024**3), DEFAULT_BODY_LIMIT),
    "TRAINHOOK_HEADER_TIMEOUT": ("header_timeout", Number("duration", 0, HOUR, low_open=True), 10),
    "TRAINHOOK_BODY_TIMEOUT": ("body_timeout", Number("duration", 0, HOUR, low_open=True), 60),
    "TRAINHOOK_LEASE_SECONDS": ("lease_seconds", Number("duration", 0, DAY, low_open=True), 60),
    "TRAINHOOK_POLL_INTERVAL": ("poll_interval", Number("duration", 0, 60, low_open=True), 0.5),
    "TRAINHOOK_MAX_ATTEMPTS": ("max_attempts", Number("int", 1, 100, "attempts"), 3),
    "TRAINHOOK_TRAIN_TIMEOUT": (
        "train_timeout",
        Number("duration", 0, 7 * DAY, low_open=True),
        1800,
    ),
    "TRAINHOOK_TEST_TIMEOUT": ("test_timeout", Number("duration", 0, 7 * DAY, low_open=True), 900),
    # 0: off
    "TRAINHOOK_RECONCILE_INTERVAL": ("reconcile_interval", Number("duration", 0, 7 * DAY), 0),
    # The venv a build is about to use must survive its own prune: at least 1.
    "TRAINHOOK_VENV_KEEP": ("venv_keep", Number("int", 1, 1000, "venvs"), 5),
    "TRAINHOOK_PUBSUB_MAX_DELIVERIES": (
        "pubsub_max_deliveries",
        Number("int", 5, 100, "deliveries (Pub/Sub allows 5-100)"),
        20,
    ),
    "TRAINHOOK_PUBSUB_PUBLISH_TIMEOUT": (
        "pubsub_publish_timeout",
        Number("duration", 0, 600, low_open=True),
        10,
    ),
    "TRAINHOOK_PUBSUB_SWEEP_SECONDS": (
        "pubsub_sweep_seconds",
        Number("duration", 0, HOUR, low_open=True),
        10,
    ),
    "TRAINHOOK_PUBSUB_PULL_SECONDS": (
        "pubsub_pull_seconds",
        Number("duration", 0, 600, low_open=True),
        5,
    ),
    # 0: never
    "TRAINHOOK_PUBSUB_REPUBLISH_SECONDS": (
        "pubsub_republish_seconds",
        Number("duration", 0, 7 * DAY),
        600,
    ),
    # Cloud Build's own limits on a build's timeout and queue TTL.
    "TRAINHOOK_CLOUDBUILD_TIMEOUT": ("cloudbuild_timeout", Number("duration", 60, DAY), 3600),
    "TRAINHOOK_CLOUDBUILD_QUEUE_TTL": ("cloudbuild_queue_ttl", Number("duration", 60, DAY), 3600),
    "TRAINHOOK_CLOUDBUILD_POLL_INTERVAL": (
        "cloudbuild_poll_interval",
        Number("duration", 0, 300, low_open=True),
        5,
    ),
    # Unset: the worker serves no HTTP (several workers may share a machine); 0: any free port.
    "TRAINHOOK_WORKER_PORT": ("worker_port", Number("int", 0, 65535, "a TCP port"), -1),
}
INT_FIELDS = frozenset(f for f, spec, _ in NUMBERS.values() if spec.kind in ("int", "size"))


def _numbers(problems: Problems, env: Mapping[str, str]) -> dict[str, Any]:
    """Every field of NUMBERS, parsed; a bad value is a problem and its default is kept."""
    out: dict[str, Any] = {}
    for name, (field_name, spec, default) in NUMBERS.items():
        value = env_number(problems, env, name, spec, default)
        out[field_name] = int(value) if field_name in INT_FIELDS else float(value)
    return out


def _pubsub_settings(
    problems: Problems, env: Mapping[str, str], queue: str, attempts: int, deliveries: int
) -> dict[str, Any]:
    """The TRAINHOOK_PUBSUB_* names; with the pubsub queue, a project is required and every
    name must be one Pub/Sub accepts (3-255 characters, starting with a letter)."""
    project = env.get("TRAINHOOK_PUBSUB_PROJECT") or env.get("GOOGLE_CLOUD_PROJECT") or ""
    names = {
        "pubsub_topic": env.get("TRAINHOOK_PUBSUB_TOPIC") or "trainhook-jobs",
        "pubsub_subscription": env.get("TRAINHOOK_PUBSUB_SUBSCRIPTION") or "trainhook-worker",
        "pubsub_dead_letter_topic": env.get("TRAINHOOK_PUBSUB_DEAD_LETTER_TOPIC") or "",
        "pubsub_dead_letter_subscription": env.get("TRAINHOOK_PUBSUB_DEAD_LETTER_SUBSCRIPTION")
        or "",
    }
    data = {
        "pubsub_data_topic": env.get("TRAINHOOK_PUBSUB_DATA_TOPIC") or "trainhook-data",
        "pubsub_data_subscription": env.get("TRAINHOOK_PUBSUB_DATA_SUBSCRIPTION")
        or "trainhook-data-service",
    }
    if queue == "pubsub" and not project:
        problems.add(
            "TRAINHOOK_QUEUE=pubsub needs TRAINHOOK_PUBSUB_PROJECT (or GOOGLE_CLOUD_PROJECT)"
        )
    # The data-event names are used with either queue, so they are checked whenever set.
    checked = {**names, **data} if queue == "pubsub" else data
    for field_name, value in checked.items():
        if value and not PUBSUB_NAME.match(value):
            var = "TRAINHOOK_" + field_name.upper()
            problems.add(
                f"{var}={value!r}: expected a Pub/Sub name (3-255 characters: letters, "
                "digits and . _ ~ + % -, starting with a letter)"
            )
    if queue == "pubsub" and deliveries <= attempts:
        # The worker's own count must decide; Pub/Sub's policy is the backstop for jobs
        # that never get to fail (they kill the worker), and duplicates count too.
        problems.add(
            f"TRAINHOOK_PUBSUB_MAX_DELIVERIES={deliveries}: expected a number above "
            f"TRAINHOOK_MAX_ATTEMPTS={attempts}"
        )
    return {"pubsub_project": project, **names, **data}


def _choice(problems: Problems, env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """A variable that names one of `choices` (the first is the default)."""
    value = env.get(name) or choices[0]
    if value not in choices:
        expected = " or ".join(repr(c) for c in choices)
        problems.add(f"{name}={value!r}: expected {expected}")
        return choices[0]
    return value


def _container_settings(problems: Problems, env: Mapping[str, str]) -> dict[str, Any]:
    """TRAINHOOK_REGISTRY, TRAINHOOK_BASE_IMAGE, TRAINHOOK_BUILD_CA_BUNDLE: they reach an
    engine's command line as single arguments, so they are held to the reference formats."""
    registry = (env.get("TRAINHOOK_REGISTRY") or "").rstrip("/") or None
    if registry and not REGISTRY_RE.fullmatch(registry):
        problems.add(
            f"TRAINHOOK_REGISTRY={registry!r}: expected HOST[:PORT][/PATH] of an OCI registry"
        )
    base = env.get("TRAINHOOK_BASE_IMAGE") or None
    if base and not IMAGE_REF_RE.fullmatch(base):
        problems.add(f"TRAINHOOK_BASE_IMAGE={base!r}: expected an image reference")
    ca = env.get("TRAINHOOK_BUILD_CA_BUNDLE") or None
    ca_path = Path(ca).expanduser().absolute() if ca else None
    if ca_path is not None and not ca_path.is_file():
        problems.add(f"TRAINHOOK_BUILD_CA_BUNDLE={ca!r}: expected a CA bundle file (not found)")
    return {"registry": registry, "base_image": base, "build_ca_bundle": ca_path}


def _flag(problems: Problems, env: Mapping[str, str], name: str) -> bool:
    """A yes/no variable: 1/true/yes or 0/false/no (unset: no)."""
    value = (env.get(name) or "0").strip().lower()
    if value not in ("1", "true", "yes", "0", "false", "no"):
        problems.add(f"{name}={env.get(name)!r}: expected 1 or 0")
        return False
    return value in ("1", "true", "yes")


def load_settings(env: Mapping[str, str] | None = None, *, require_repos: bool = True) -> Settings:
    """Build settings from `env` (default: the process environment).

    Raises ConfigError listing every problem found in the environment and the repositories
    file, each naming the variable, or the file, repository and key, with the value seen
    and what is expected.
    """
    env = dict(os.environ if env is None else env)
    problems = Problems()
    home = Path(env.get("TRAINHOOK_HOME") or "./.trainhook").expanduser().absolute()
    database_url = env.get("TRAINHOOK_DATABASE_URL") or f"sqlite:///{home / 'trainhook.db'}"
    config_path = Path(env.get("TRAINHOOK_CONFIG") or "./trainhook.toml").expanduser().absolute()
    queue = _choice(problems, env, "TRAINHOOK_QUEUE", ("sql", "pubsub"))
    builder = _choice(problems, env, "TRAINHOOK_BUILDER", BUILDERS)
    mode = _choice(problems, env, "TRAINHOOK_ENV", ("dev", "prod"))
    log_format = _choice(
        problems, env, "TRAINHOOK_LOG_FORMAT", ("json", "text") if mode == "prod" else LOG_FORMATS
    )
    artifacts = env.get("TRAINHOOK_ARTIFACTS") or str(home / "artifacts")
    token = env.get("TRAINHOOK_API_TOKEN") or None
    if artifacts.startswith("gs://"):
        try:
            parse_gs_url(artifacts)
        except ValueError as exc:
            problems.add(f"TRAINHOOK_ARTIFACTS: {exc} (expected gs://bucket/prefix)")
    numbers = _numbers(problems, env)
    sandbox: dict[str, Any] = {}
    with problems.check():
        sandbox["sandbox_limits"] = limits_from_env(env)
    with problems.check():
        sandbox["sandbox_paths"] = sandbox_paths_from_env(env)
    repos: tuple[RepoConfig, ...] = ()
    if config_path.exists() or require_repos:
        repos, repo_problems = read_repos(config_path)
        problems.extend(repo_problems)

    secrets = {r.secret_env: env[r.secret_env] for r in repos if env.get(r.secret_env)}
    secrets.update({e: env[e] for r in repos if (e := r.forge_token_env) and env.get(e)})
    # Notification URLs are credentials too (an incoming webhook posts with no other key).
    secrets.update({e: env[e] for r in repos for n in r.notify for e in n.envs if env.get(e)})
    access = _choice(
        problems,
        env,
        "TRAINHOOK_DASHBOARD_ACCESS",
        ("token", "public", "proxy") if mode == "prod" else ACCESS_MODES,
    )
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
        public_url=(env.get("TRAINHOOK_PUBLIC_URL") or "").rstrip("/"),
        nltk_index=env.get("TRAINHOOK_NLTK_INDEX") or None,
        log_format=log_format,
        dashboard_access=access,
        dashboard_public=_flag(problems, env, "TRAINHOOK_DASHBOARD_PUBLIC"),
        iap_audience=env.get("TRAINHOOK_IAP_AUDIENCE") or None,
        metrics_access=_choice(problems, env, "TRAINHOOK_METRICS_ACCESS", METRICS_ACCESS),
        **numbers,
        **sandbox,
        **_pubsub_settings(
            problems, env, queue, numbers["max_attempts"], numbers["pubsub_max_deliveries"]
        ),
        **cloudbuild_env(env),
        **_container_settings(problems, env),
    )
    if builder == "cloudbuild":
        problems.extend(cloudbuild_problems(settings))
    if mode == "prod":
        problems.extend(insecure_defaults(settings))
    problems.raise_if_any()
    return settings


def insecure_defaults(settings: Settings) -> list[str]:
    """What TRAINHOOK_ENV=prod refuses: a missing secret, no API token, SQLite."""
    prefix = "TRAINHOOK_ENV=prod refuses insecure defaults: "
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
        for target in repo.notify:
            for name in target.envs:
                if not settings.secrets.get(name):
                    problems.append(f"repository {repo.name!r}: notify variable {name} is not set")
    if settings.dashboard_access == "public" and not settings.dashboard_public:
        problems.append(
            "TRAINHOOK_DASHBOARD_ACCESS=public opens pages, logs and exports to anyone who can"
            " reach the port; set TRAINHOOK_DASHBOARD_PUBLIC=1 if that is meant"
        )
    if settings.dashboard_access == "proxy" and not settings.iap_audience:
        problems.append(
            "TRAINHOOK_DASHBOARD_ACCESS=proxy without TRAINHOOK_IAP_AUDIENCE trusts an identity"
            " header anyone reaching the port can send"
        )
    return [prefix + problem for problem in problems]


def refuse_insecure_defaults(settings: Settings) -> None:
    """In prod, refuse to start with a missing secret, no API token or SQLite."""
    problems = Problems()
    problems.extend(insecure_defaults(settings))
    problems.raise_if_any("TRAINHOOK_ENV=prod refuses insecure defaults")
