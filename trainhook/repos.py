"""The repositories file (TOML): which repositories trainhook builds, and how."""

from __future__ import annotations

import difflib
import fnmatch
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, cast
from urllib.parse import urlparse

from croniter import croniter

from trainhook.configcheck import Problems, shown
from trainhook.deployconfig import (
    DeployConfig,
    VertexConfig,
    check_image,
    parse_deploy,
    parse_vertex,
)
from trainhook.errors import ConfigError
from trainhook.gcs import parse_gs_url
from trainhook.notifyconfig import NotifyConfig, check_notify
from trainhook.pathglobs import PathFilter, PatternError, check_pattern
from trainhook.sandboxsettings import parse_repo_env, parse_repo_limits

PROVIDERS = ("github", "gitlab", "gitea", "forgejo")
DEFAULT_DATA = ("data/cleaned_training_sample.csv", "data/prod.csv", "data/train.csv")
# git transports that may be configured; `ext::` and friends run commands and are never allowed
CLONE_SCHEMES = ("https", "http", "ssh", "git", "file")
# Where test_command runs: the worker's own Python, or a venv built from the commit's deps files
TEST_ENVS = ("worker", "venv")
# Which pull/merge requests build: none, those whose head branch is in the repository itself,
# or those from forks too (their code then runs on the worker: only inside the sandbox).
PULL_REQUESTS = ("off", "same-repo", "all")
# A cache group's name: repositories naming the same group share cache entries (deps, nltk,
# model); lowercase so that two spellings never make two groups by accident.
CACHE_GROUP_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


@dataclass(frozen=True)
class RepoConfig:
    """One `[[repos]]` table of the repositories file."""

    name: str
    clone_url: str
    secret_env: str
    provider: str = "github"
    branches: tuple[str, ...] = ("main",)
    tags: tuple[str, ...] = ()  # glob patterns of tags that build; empty: tags never build
    data: tuple[str, ...] = DEFAULT_DATA
    test_command: str | None = None
    test_env: str = "worker"  # one of TEST_ENVS
    text_column: str = "text"
    label_column: str = "label"
    min_macro_f1: float = 0.0
    max_regression: float = 1.0
    paths: tuple[str, ...] = ()  # globs: a push builds only when it changes a matching file
    paths_ignore: tuple[str, ...] = ()  # globs: changes to these never make a push build
    forge_token_env: str | None = None  # env var with a forge API token (statuses, reconcile)
    forge_api_url: str | None = None  # the forge's API base; default: from clone_url's host
    hook_id: int | None = None  # the forge's id of trainhook's webhook (reconcile)
    # Production (TRAINHOOK_BUILDER=cloudbuild): where the image goes and how it is deployed.
    image: str | None = None
    deploy: DeployConfig | None = None
    vertex: VertexConfig | None = None
    dockerfile: str = "Dockerfile"  # built by the container builders, relative to the checkout
    supersede: bool = True  # a newer push cancels this branch's older, not yet deployed build
    # Training hyperparameters over the trainer's defaults (`params = { C = 0.5 }`); they are
    # part of the model cache key. The columns have their own keys above.
    params: tuple[tuple[str, Any], ...] = ()
    # Cache entries belong to this repository alone unless an operator names a group here:
    # repositories naming the same group share them (their models included).
    cache_group: str | None = None
    # Repository code (tests, venv installs, the health check) runs in a bubblewrap sandbox
    # unless `sandbox = false`; `sandbox_network` lets its tests reach the network;
    # `sandbox_env` are plain variables its tests see; `sandbox_limits` override
    # TRAINHOOK_SANDBOX_* (memory, cpu_seconds, processes, disk) for this repository.
    sandbox: bool = True
    sandbox_network: bool = False
    sandbox_env: tuple[tuple[str, str], ...] = ()
    sandbox_limits: tuple[tuple[str, int], ...] = ()
    # `[[repos.notify]]`: where build results are announced (trainhook/notifyconfig.py).
    notify: tuple[NotifyConfig, ...] = ()
    # Pull/merge requests into a configured branch build up to `train` (never deployed):
    # one of PULL_REQUESTS.
    pull_requests: str = "same-repo"
    # A cron expression (UTC): each tick queues a build of `schedule_branch` (default: the
    # first of `branches`) that builds only when the model key changed, unless
    # `schedule_force` (trainhook/schedules.py).
    schedule: str | None = None
    schedule_branch: str | None = None
    schedule_force: bool = False

    @property
    def scheduled_branch(self) -> str:
        """The branch a scheduled build builds."""
        return self.schedule_branch or self.branches[0]

    def wants_branch(self, branch: str) -> bool:
        """True when a push to `branch` should build (glob patterns, as in the file)."""
        return any(fnmatch.fnmatchcase(branch, pattern) for pattern in self.branches)

    def wants_tag(self, tag: str) -> bool:
        """True when pushing tag `tag` should build (glob patterns; none configured: never)."""
        return any(fnmatch.fnmatchcase(tag, pattern) for pattern in self.tags)

    @property
    def path_filter(self) -> PathFilter:
        return PathFilter(self.paths, self.paths_ignore)

    @property
    def train_params(self) -> dict[str, Any]:
        """The training parameters for the trainer (`TrainParams.from_dict`), columns included."""
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in self.params}
        return {**values, "text_column": self.text_column, "label_column": self.label_column}

    @property
    def slug(self) -> str:
        """A file-system-safe name, unique per repository."""
        return self.provider + "-" + self.name.replace("/", "--")


_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "provider": (str,),
    "clone_url": (str,),
    "branches": (list,),
    "tags": (list,),
    "secret_env": (str,),
    "data": (list,),
    "test_command": (str,),
    "test_env": (str,),
    "text_column": (str,),
    "label_column": (str,),
    "min_macro_f1": (float, int),
    "max_regression": (float, int),
    "paths": (list,),
    "paths_ignore": (list,),
    "forge_token_env": (str,),
    "forge_api_url": (str,),
    "hook_id": (int,),
    "image": (str,),
    "deploy": (dict,),
    "vertex": (dict,),
    "dockerfile": (str,),
    "supersede": (bool,),
    "params": (dict,),
    "cache_group": (str,),
    "sandbox": (bool,),
    "sandbox_network": (bool,),
    "sandbox_env": (dict,),
    "sandbox_limits": (dict,),
    "notify": (list,),
    "pull_requests": (str,),
    "schedule": (str,),
    "schedule_branch": (str,),
    "schedule_force": (bool,),
}
_LISTS = ("branches", "tags", "data", "paths", "paths_ignore")
_REQUIRED = {
    "name": "the repository's full name, as the forge sends it",
    "clone_url": "the URL trainhook clones",
    "secret_env": "the environment variable holding the webhook secret",
}
# The quality gate's macro-F1 figures are fractions.
_FRACTIONS = ("min_macro_f1", "max_regression")
_TYPE_WORDS = {str: "a string", list: "a list of strings", bool: "true or false"}
_TYPE_WORDS.update({int: "a whole number", float: "a number", dict: "a table"})


def _expected_type(key: str) -> str:
    return " or ".join(dict.fromkeys(_TYPE_WORDS[t] for t in _TYPES[key][:1]))


def _toml_type(value: object) -> str:
    names = {str: "string", bool: "boolean", int: "integer", float: "float", list: "array"}
    return names.get(type(value), "table" if isinstance(value, dict) else type(value).__name__)


def _fail(path: Path, repo: str, message: str) -> ConfigError:
    return ConfigError(f"{path}: repository {repo}: {message}")


def _check_data_path(path: Path, repo: str, value: str) -> None:
    if value.startswith("gs://"):
        try:
            _, name = parse_gs_url(value)
        except ValueError as exc:
            raise _fail(path, repo, f"key 'data': {exc}") from None
        if not name or name.endswith("/"):
            raise _fail(
                path, repo, f"key 'data': {value!r} must name an object (gs://bucket/file.csv)"
            )
        return
    if "://" in value:
        raise _fail(path, repo, f"key 'data': {value!r}: only gs:// URLs are supported")
    pure = PurePosixPath(value)
    if not value or pure.is_absolute() or ".." in pure.parts or "\\" in value:
        raise _fail(
            path, repo, f"key 'data': {value!r} must be a relative path inside the repo or gs://"
        )


def _check_params(path: Path, repo: str, table: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    from trainer.params import ParamsError, TrainParams

    params = dict(table.get("params", {}))
    for column in ("text_column", "label_column"):
        if column in params:
            raise _fail(path, repo, f"key 'params': set {column!r} as a key of its own")
    columns: dict[str, Any] = {k: table[k] for k in ("text_column", "label_column") if k in table}
    try:
        TrainParams.from_dict({**params, **columns})
    except ParamsError as exc:
        raise _fail(path, repo, f"key 'params': {exc}") from None
    return tuple(
        (key, tuple(value) if isinstance(value, list) else value)
        for key, value in sorted(params.items())
    )


def _check_clone_url(path: Path, repo: str, url: str) -> None:
    if "::" in url.split("/", 1)[0]:
        raise _fail(path, repo, f"key 'clone_url': transport helpers are refused ({url!r})")
    scheme = urlparse(url).scheme
    if not scheme and ":" in url and not url.startswith("/"):
        scheme = "ssh"  # scp-like syntax: git@host:org/repo.git
    if scheme not in CLONE_SCHEMES:
        raise _fail(
            path,
            repo,
            f"key 'clone_url': {url!r} has scheme {scheme or 'none'!r}, expected one of "
            f"{CLONE_SCHEMES}",
        )


def _check_pull_requests(path: Path, repo: str, table: dict[str, Any]) -> None:
    value = table.get("pull_requests", "same-repo")
    if value not in PULL_REQUESTS:
        raise _fail(path, repo, f"key 'pull_requests': {value!r}: expected one of {PULL_REQUESTS}")
    if value == "all" and table.get("sandbox", True) is False:
        # A fork's pull request is anyone's code: with `sandbox = false` its tests would run
        # as the worker, with the worker's network, files and credentials.
        raise _fail(
            path,
            repo,
            "key 'pull_requests': \"all\" builds forks' code, which must run sandboxed: "
            'it is refused with sandbox = false (use "same-repo", or the sandbox)',
        )


def _schedule_problems(path: Path, repo: str, table: dict[str, Any], problems: Problems) -> None:
    cron = table.get("schedule")
    five = cron is not None and (len(cron.split()) == 5 or cron.startswith("@"))
    if cron is not None and not (five and croniter.is_valid(cron)):
        problems.add(
            str(
                _fail(
                    path,
                    repo,
                    f"key 'schedule': {cron!r} is not a cron expression (expected five fields, "
                    'minute hour day-of-month month day-of-week, in UTC: "0 3 * * *")',
                )
            )
        )
    branch = table.get("schedule_branch", (table.get("branches") or ["main"])[0])
    key = "schedule_branch" if "schedule_branch" in table else "branches"
    if (cron is not None or "schedule_branch" in table) and (
        not branch or any(c in branch for c in "*?[]") or branch.startswith("refs/")
    ):
        problems.add(
            str(
                _fail(
                    path,
                    repo,
                    f"key {key!r}: {branch!r} is not a branch a schedule can build (expected "
                    "a branch name, no glob; set schedule_branch)",
                )
            )
        )


def _forge_problems(path: Path, repo: str, table: dict[str, Any], problems: Problems) -> None:
    for key in ("paths", "paths_ignore"):
        for pattern in table.get(key, []):
            with problems.check():
                try:
                    check_pattern(pattern)
                except PatternError as exc:
                    raise _fail(path, repo, f"key {key!r}: {exc}") from None
    api = table.get("forge_api_url")
    if api is not None and (
        urlparse(api).scheme not in ("https", "http") or not urlparse(api).hostname
    ):
        problems.add(str(_fail(path, repo, f"key 'forge_api_url': {api!r} is not an http(s) URL")))
    hook_id = table.get("hook_id")
    if hook_id is not None and hook_id <= 0:
        problems.add(
            str(_fail(path, repo, f"key 'hook_id': {hook_id}: expected a positive whole number"))
        )
    env = table.get("forge_token_env")
    if env is not None and not env:
        problems.add(
            str(_fail(path, repo, "key 'forge_token_env' must name an environment variable"))
        )


def _shape_problems(path: Path, label: str, table: dict[str, Any]) -> list[str]:
    """Unknown keys, missing required keys and wrong types: every one of them."""
    out = []
    for key in sorted(set(table) - set(_TYPES)):
        near = difflib.get_close_matches(key, _TYPES, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        out.append(f"unknown key {key!r} = {shown(table[key])}{hint}")
    for key, what in _REQUIRED.items():
        if key not in table:
            out.append(f"missing required key {key!r} (expected {what})")
    for key, value in table.items():
        if key not in _TYPES:
            continue
        number = float(value) if isinstance(value, int | float) else math.nan
        wrong_bool = isinstance(value, bool) and bool not in _TYPES[key]
        if not isinstance(value, _TYPES[key]) or wrong_bool:
            out.append(
                f"key {key!r} has the wrong type: got {shown(value)} ({_toml_type(value)}), "
                f"expected {_expected_type(key)}"
            )
        elif key in _LISTS and not all(isinstance(i, str) and i for i in cast(list[Any], value)):
            out.append(f"key {key!r} must be a list of non-empty strings (got {shown(value)})")
        elif key in _FRACTIONS and not 0 <= number <= 1:
            out.append(f"key {key!r}: got {shown(value)}, expected a number from 0 to 1")
    return [str(_fail(path, label, line)) for line in out]


def parse_repo(path: Path, index: int, table: dict[str, Any]) -> RepoConfig:
    """Validate one table; raise ConfigError naming the file, the repository and the key of
    every problem found in it."""
    problems = Problems()
    repo = check_repo(path, index, table, problems)
    problems.raise_if_any(f"{path}: repository #{index + 1}")
    assert repo is not None
    return repo


def check_repo(
    path: Path, index: int, table: dict[str, Any], problems: Problems
) -> RepoConfig | None:
    """Validate one table, adding each problem to `problems`; None when there was one."""
    label = repr(table.get("name")) if isinstance(table.get("name"), str) else f"#{index + 1}"
    before = len(problems.lines)
    shape = _shape_problems(path, label, table)
    problems.extend(shape)
    if shape:
        # Wrong types make the checks of values below meaningless (or crash them).
        return None
    with problems.check():
        if table.get("provider", "github") not in PROVIDERS:
            raise _fail(
                path,
                label,
                f"key 'provider': {table['provider']!r}: expected one of {PROVIDERS}",
            )
    for item in table.get("data", []):
        with problems.check():
            _check_data_path(path, label, item)
    with problems.check():
        if table.get("test_env", "worker") not in TEST_ENVS:
            raise _fail(path, label, f"key 'test_env': {table['test_env']!r} not in {TEST_ENVS}")
    with problems.check():
        _check_clone_url(path, label, table["clone_url"])
    with problems.check():
        dockerfile = table.get("dockerfile", "Dockerfile")
        parts = dockerfile.split("/")
        if dockerfile.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise _fail(
                path, label, f"key 'dockerfile': {dockerfile!r}: expected a path in the checkout"
            )
    with problems.check():
        _check_pull_requests(path, label, table)
    _forge_problems(path, label, table, problems)
    _schedule_problems(path, label, table, problems)
    group = table.get("cache_group")
    if group is not None and not CACHE_GROUP_RE.fullmatch(group):
        problems.add(
            str(
                _fail(
                    path,
                    label,
                    f"key 'cache_group': {group!r} is not a group name (1-63 of a-z 0-9 . _ -,"
                    " starting with a letter or digit)",
                )
            )
        )
    kwargs: dict[str, Any] = dict(table)
    if "params" in kwargs:
        with problems.check():
            kwargs["params"] = _check_params(path, label, table)
    for key, parse in (("sandbox_env", parse_repo_env), ("sandbox_limits", parse_repo_limits)):
        if key in kwargs:
            with problems.check(f"{path}: repository {label}: key {key!r}: "):
                kwargs[key] = tuple(sorted(dict(parse(kwargs[key])).items()))
    for key in _LISTS:
        if key in kwargs:
            kwargs[key] = tuple(kwargs[key])
    for key in _FRACTIONS:
        if key in kwargs:
            kwargs[key] = float(kwargs[key])
    where = f"{path}: repository {label}: "
    if "image" in kwargs:
        with problems.check(where):
            check_image(kwargs["image"])
    if "deploy" in kwargs:
        with problems.check(where):
            kwargs["deploy"] = parse_deploy(kwargs["deploy"])
    if "vertex" in kwargs:
        with problems.check(where):
            kwargs["vertex"] = parse_vertex(kwargs["vertex"])
    if "notify" in kwargs:
        kwargs["notify"] = check_notify(path, label, kwargs["notify"], problems)
    if len(problems.lines) > before:
        return None
    return RepoConfig(**kwargs)


def read_repos(path: Path) -> tuple[tuple[RepoConfig, ...], list[str]]:
    """Read and validate the repositories file: the valid repositories and every problem."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return (), [f"{path}: repositories file not found (set TRAINHOOK_CONFIG)"]
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        return (), [f"{path}: not valid TOML: {exc}"]
    problems = Problems()
    for key in sorted(set(raw) - {"repos"}):
        problems.add(f"{path}: unknown top-level key {key!r} (expected [[repos]] tables)")
    tables = raw.get("repos", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        problems.add(f"{path}: 'repos' must be an array of tables ([[repos]]), got {shown(tables)}")
        return (), problems.lines
    parsed = [check_repo(path, i, t, problems) for i, t in enumerate(tables)]
    repos = tuple(repo for repo in parsed if repo is not None)
    seen: set[tuple[str, str]] = set()
    for repo in repos:
        if (repo.provider, repo.name) in seen:
            problems.add(str(_fail(path, repr(repo.name), "is configured twice")))
        seen.add((repo.provider, repo.name))
    return repos, problems.lines


def load_repos(path: Path) -> tuple[RepoConfig, ...]:
    """Read and validate the repositories file; raise ConfigError listing every problem."""
    repos, lines = read_repos(path)
    problems = Problems()
    problems.extend(lines)
    problems.raise_if_any(f"{path} is not valid")
    return repos
