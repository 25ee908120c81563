"""The Cloud Build settings (TRAINHOOK_GCP_*, TRAINHOOK_SOURCE_BUCKET, TRAINHOOK_CLOUDBUILD_*)
and their start-up check when TRAINHOOK_BUILDER=cloudbuild."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlparse

from trainhook.deployconfig import IMAGE_FORMAT
from trainhook.errors import ConfigError
from trainhook.gcs import split_bucket

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from trainhook.repos import RepoConfig

PROJECT_RE = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
REGION_RE = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")


class CloudBuildConfig(Protocol):
    """The settings the Cloud Build check reads (trainhook.settings.Settings has them; a
    Protocol so that settings may import this module without this module importing it)."""

    @property
    def gcp_project(self) -> str | None: ...
    @property
    def gcp_region(self) -> str | None: ...
    @property
    def source_bucket(self) -> str | None: ...
    @property
    def cloudbuild_endpoint(self) -> str | None: ...
    @property
    def cloudbuild_timeout(self) -> float: ...
    @property
    def cloudbuild_queue_ttl(self) -> float: ...
    @property
    def cloudbuild_poll_interval(self) -> float: ...
    @property
    def cloudbuild_service_account(self) -> str | None: ...
    @property
    def config_path(self) -> Path: ...
    @property
    def repos(self) -> Sequence[RepoConfig]: ...


def cloudbuild_env(env: Mapping[str, str]) -> dict[str, Any]:
    """The Settings fields named here; the numeric ones (timeout, queue TTL, poll interval)
    are parsed and range-checked with every other number in trainhook.settings."""

    def text(name: str) -> str | None:
        return (env.get(name) or "").strip().rstrip("/") or None

    return {
        "gcp_project": text("TRAINHOOK_GCP_PROJECT") or text("GOOGLE_CLOUD_PROJECT"),
        "gcp_region": text("TRAINHOOK_GCP_REGION"),
        "source_bucket": text("TRAINHOOK_SOURCE_BUCKET"),
        "cloudbuild_endpoint": text("TRAINHOOK_CLOUDBUILD_ENDPOINT"),
        "cloudbuild_service_account": text("TRAINHOOK_CLOUDBUILD_SERVICE_ACCOUNT"),
    }


def _env_problems(settings: CloudBuildConfig) -> list[str]:
    problems = []
    project, region, bucket = settings.gcp_project, settings.gcp_region, settings.source_bucket
    if not project:
        problems.append("TRAINHOOK_GCP_PROJECT is not set (the project that runs the builds)")
    elif not PROJECT_RE.fullmatch(project):
        problems.append(
            f"TRAINHOOK_GCP_PROJECT={project!r}: expected a project id (6-30 of a-z 0-9 -)"
        )
    if not region:
        problems.append("TRAINHOOK_GCP_REGION is not set (the Cloud Build region)")
    elif not REGION_RE.fullmatch(region):
        problems.append(f"TRAINHOOK_GCP_REGION={region!r}: expected a region (europe-west1)")
    if not bucket:
        problems.append("TRAINHOOK_SOURCE_BUCKET is not set (gs://bucket[/prefix] for sources)")
    else:
        try:
            split_bucket(bucket)
        except ValueError as exc:
            problems.append(f"TRAINHOOK_SOURCE_BUCKET={bucket!r} {exc}")
    endpoint = settings.cloudbuild_endpoint
    if endpoint:
        url = urlparse(endpoint)
        if url.scheme not in ("http", "https") or not url.hostname or url.path or url.query:
            problems.append(
                f"TRAINHOOK_CLOUDBUILD_ENDPOINT={endpoint!r} is not http(s)://host[:port]"
            )
    account = settings.cloudbuild_service_account
    if account and "@" not in account:
        problems.append(f"TRAINHOOK_CLOUDBUILD_SERVICE_ACCOUNT={account!r} is not an email")
    return problems


def cloudbuild_problems(settings: CloudBuildConfig) -> list[str]:
    """Everything missing or wrong for TRAINHOOK_BUILDER=cloudbuild, one line each."""
    problems = _env_problems(settings)
    for repo in settings.repos:
        where = f"{settings.config_path}: repository {repo.name!r}"
        if repo.image is None:
            problems.append(
                f"{where}: missing key 'image' (TRAINHOOK_BUILDER=cloudbuild; expected "
                f"{IMAGE_FORMAT})"
            )
        if repo.deploy is None or not repo.deploy.gke:
            # A table of local keys only (port, env, ...) is valid for the container
            # builders, and says nothing about where on GKE to deploy.
            what = "table [repos.deploy]" if repo.deploy is None else "keys in [repos.deploy]"
            problems.append(
                f"{where}: missing {what} (TRAINHOOK_BUILDER=cloudbuild; "
                "expected cluster, location, deployment, ...)"
            )
    return problems


def check_cloudbuild(settings: CloudBuildConfig) -> None:
    """Raise ConfigError listing every problem, or return when the builder can start."""
    problems = cloudbuild_problems(settings)
    if problems:
        raise ConfigError(
            "TRAINHOOK_BUILDER=cloudbuild is not configured:\n  - " + "\n  - ".join(problems),
            problems=problems,
        )
