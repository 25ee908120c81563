"""The repositories file (TOML): which repositories trainhook builds, and how."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from trainhook.deployconfig import (
    DeployConfig,
    DeployKeyError,
    VertexConfig,
    check_image,
    parse_deploy,
    parse_vertex,
)
from trainhook.errors import ConfigError
from trainhook.gcs import parse_gs_url
from trainhook.pathglobs import PathFilter, PatternError, check_pattern
from trainhook.sandboxsettings import parse_repo_env, parse_repo_limits

PROVIDERS = ("github", "gitlab", "gitea", "forgejo")
DEFAULT_DATA = ("data/cleaned_training_sample.csv", "data/prod.csv", "data/train.csv")
# git transports that may be configured; `ext::` and friends run commands and are never allowed
CLONE_SCHEMES = ("https", "http", "ssh", "git", "file")
# Where test_command runs: the worker's own Python, or a venv built from the commit's deps files
TEST_ENVS = ("worker", "venv")
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
    "supersede": (bool,),
    "params": (dict,),
    "cache_group": (str,),
    "sandbox": (bool,),
    "sandbox_network": (bool,),
    "sandbox_env": (dict,),
    "sandbox_limits": (dict,),
}
_LISTS = ("branches", "tags", "data", "paths", "paths_ignore")
_REQUIRED = ("name", "clone_url", "secret_env")


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
            path, repo, f"key 'clone_url': scheme {scheme or 'none'!r} not in {CLONE_SCHEMES}"
        )


def _check_forge_keys(path: Path, repo: str, table: dict[str, Any]) -> None:
    for key in ("paths", "paths_ignore"):
        for pattern in table.get(key, []):
            try:
                check_pattern(pattern)
            except PatternError as exc:
                raise _fail(path, repo, f"key {key!r}: {exc}") from None
    api = table.get("forge_api_url")
    if api is not None and (
        urlparse(api).scheme not in ("https", "http") or not urlparse(api).hostname
    ):
        raise _fail(path, repo, f"key 'forge_api_url': {api!r} is not an http(s) URL")
    hook_id = table.get("hook_id")
    if hook_id is not None and hook_id <= 0:
        raise _fail(path, repo, f"key 'hook_id': {hook_id} is not a positive number")
    env = table.get("forge_token_env")
    if env is not None and not env:
        raise _fail(path, repo, "key 'forge_token_env' must name an environment variable")


def parse_repo(path: Path, index: int, table: dict[str, Any]) -> RepoConfig:
    """Validate one table; raise ConfigError naming the file, the repository and the key."""
    label = repr(table.get("name")) if isinstance(table.get("name"), str) else f"#{index + 1}"
    unknown = sorted(set(table) - set(_TYPES))
    if unknown:
        raise _fail(path, label, f"unknown key {unknown[0]!r}")
    for key in _REQUIRED:
        if key not in table:
            raise _fail(path, label, f"missing required key {key!r}")
    for key, value in table.items():
        wrong_bool = isinstance(value, bool) and bool not in _TYPES[key]
        if not isinstance(value, _TYPES[key]) or wrong_bool:
            raise _fail(path, label, f"key {key!r} has the wrong type ({type(value).__name__})")
    if table.get("provider", "github") not in PROVIDERS:
        raise _fail(path, label, f"key 'provider': {table['provider']!r} not in {PROVIDERS}")
    for key in _LISTS:
        items = table.get(key, [])
        if not all(isinstance(item, str) and item for item in items):
            raise _fail(path, label, f"key {key!r} must be a list of non-empty strings")
    for item in table.get("data", []):
        _check_data_path(path, label, item)
    if table.get("test_env", "worker") not in TEST_ENVS:
        raise _fail(path, label, f"key 'test_env': {table['test_env']!r} not in {TEST_ENVS}")
    _check_clone_url(path, label, table["clone_url"])
    _check_forge_keys(path, label, table)
    group = table.get("cache_group")
    if group is not None and not CACHE_GROUP_RE.fullmatch(group):
        raise _fail(
            path,
            label,
            f"key 'cache_group': {group!r} is not a group name (1-63 of a-z 0-9 . _ -,"
            " starting with a letter or digit)",
        )
    kwargs: dict[str, Any] = dict(table)
    if "params" in kwargs:
        kwargs["params"] = _check_params(path, label, table)
    for key, parse in (("sandbox_env", parse_repo_env), ("sandbox_limits", parse_repo_limits)):
        if key in kwargs:
            try:
                parsed = parse(kwargs[key])
            except ValueError as exc:
                raise _fail(path, label, f"key {key!r}: {exc}") from None
            kwargs[key] = tuple(sorted(dict(parsed).items()))
    for key in _LISTS:
        if key in kwargs:
            kwargs[key] = tuple(kwargs[key])
    for key in ("min_macro_f1", "max_regression"):
        if key in kwargs:
            kwargs[key] = float(kwargs[key])
    try:
        if "image" in kwargs:
            check_image(kwargs["image"])
        if "deploy" in kwargs:
            kwargs["deploy"] = parse_deploy(kwargs["deploy"])
        if "vertex" in kwargs:
            kwargs["vertex"] = parse_vertex(kwargs["vertex"])
    except DeployKeyError as exc:
        raise _fail(path, label, str(exc)) from None
    return RepoConfig(**kwargs)


def load_repos(path: Path) -> tuple[RepoConfig, ...]:
    """Read and validate the repositories file; raise ConfigError on any problem."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: repositories file not found (set TRAINHOOK_CONFIG)") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    extra = sorted(set(raw) - {"repos"})
    if extra:
        raise ConfigError(f"{path}: unknown top-level key {extra[0]!r} (expected [[repos]])")
    tables = raw.get("repos", [])
    if not isinstance(tables, list):
        raise ConfigError(f"{path}: 'repos' must be an array of tables ([[repos]])")
    repos = tuple(parse_repo(path, i, t) for i, t in enumerate(tables))
    seen: set[tuple[str, str]] = set()
    for repo in repos:
        if (repo.provider, repo.name) in seen:
            raise _fail(path, repr(repo.name), "is configured twice")
        seen.add((repo.provider, repo.name))
    return repos
