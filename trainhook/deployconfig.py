"""The production keys of a repository: its image, `[repos.deploy]` and `[repos.vertex]`.

Values checked here end up in a Cloud Build request (as substitutions and step environment,
never spliced into a shell script), so they are held to the formats GCP and Kubernetes accept.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# REGION-docker.pkg.dev/PROJECT/REPOSITORY/NAME (multi-regions: us, europe, asia)
IMAGE_RE = re.compile(
    r"^(?P<location>[a-z]+(?:-[a-z]+[0-9]+)?)-docker\.pkg\.dev"
    r"/(?P<project>[a-z][a-z0-9-]{4,28}[a-z0-9])"
    r"/(?P<repository>[a-z](?:[a-z0-9-]*[a-z0-9])?)"
    r"/(?P<name>[a-z0-9]+(?:(?:[._-]|__|/)[a-z0-9]+)*)$"
)
K8S_NAME_RE = re.compile(r"^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?$")
LOCATION_RE = re.compile(r"^[a-z]+-[a-z]+[0-9]+(?:-[a-z])?$")  # region or zone
HEALTH_PATH_RE = re.compile(r"^/[A-Za-z0-9._~/?=&%+-]*$")
PIPELINE_RE = re.compile(r"^(?:gs://|https://)[^\s'\"$`\\]+$|^[A-Za-z0-9._][A-Za-z0-9._/-]*$")
IMAGE_FORMAT = "REGION-docker.pkg.dev/PROJECT/REPOSITORY/NAME"


class DeployKeyError(ValueError):
    """A bad value in one of the production tables; the message names the key."""


@dataclass(frozen=True)
class DeployConfig:
    """`[repos.deploy]`: the GKE Deployment whose container runs the image."""

    cluster: str
    location: str
    deployment: str
    namespace: str = "default"
    container: str = ""  # empty: the Deployment's name
    health_path: str = "/healthz"
    timeout: int = 300  # seconds for `kubectl rollout status`

    @property
    def container_name(self) -> str:
        return self.container or self.deployment


@dataclass(frozen=True)
class VertexConfig:
    """`[repos.vertex]`: a Vertex AI pipeline submitted (not awaited) after the push.

    `pipeline` is a compiled pipeline spec: a path in the repository, a `gs://` URI or an
    Artifact Registry `https://` template. String parameters may say `{image}`, `{sha}`,
    `{build_id}` or `{source}`; they become the pushed image, the commit and so on."""

    pipeline: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    pipeline_root: str | None = None
    service_account: str | None = None


def check_image(value: Any) -> str:
    if not isinstance(value, str) or not IMAGE_RE.fullmatch(value):
        raise DeployKeyError(f"key 'image': {value!r} is not {IMAGE_FORMAT} (no tag or digest)")
    return value


def _table(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DeployKeyError(f"key {name!r} must be a table ([repos.{name}])")
    return value


def _string(table: str, key: str, value: Any, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise DeployKeyError(f"key '{table}.{key}': {value!r} is not {what}")
    return value


def parse_deploy(value: Any) -> DeployConfig:
    """Validate `[repos.deploy]`; raises DeployKeyError naming the key."""
    table = _table("deploy", value)
    known = {
        "cluster",
        "location",
        "namespace",
        "deployment",
        "container",
        "health_path",
        "timeout",
    }
    unknown = sorted(set(table) - known)
    if unknown:
        raise DeployKeyError(f"unknown key 'deploy.{unknown[0]}'")
    for key in ("cluster", "location", "deployment"):
        if key not in table:
            raise DeployKeyError(f"missing required key 'deploy.{key}'")
    name = "a Kubernetes/GKE name (lowercase letters, digits, '-')"
    out: dict[str, Any] = {}
    for key in ("cluster", "namespace", "deployment", "container"):
        if key in table:
            out[key] = _string("deploy", key, table[key], K8S_NAME_RE, name)
    out["location"] = _string(
        "deploy", "location", table["location"], LOCATION_RE, "a region or zone (europe-west1)"
    )
    if "health_path" in table:
        out["health_path"] = _string(
            "deploy", "health_path", table["health_path"], HEALTH_PATH_RE, "a URL path ('/…')"
        )
    if "timeout" in table:
        timeout = table["timeout"]
        if not isinstance(timeout, int) or isinstance(timeout, bool) or not 10 <= timeout <= 7200:
            raise DeployKeyError(f"key 'deploy.timeout': {timeout!r} is not 10..7200 seconds")
        out["timeout"] = timeout
    return DeployConfig(**out)


def parse_vertex(value: Any) -> VertexConfig:
    """Validate `[repos.vertex]`; raises DeployKeyError naming the key."""
    table = _table("vertex", value)
    unknown = sorted(set(table) - {"pipeline", "parameters", "pipeline_root", "service_account"})
    if unknown:
        raise DeployKeyError(f"unknown key 'vertex.{unknown[0]}'")
    if "pipeline" not in table:
        raise DeployKeyError("missing required key 'vertex.pipeline'")
    pipeline = _string(
        "vertex",
        "pipeline",
        table["pipeline"],
        PIPELINE_RE,
        "a path in the repository, a gs:// URI or an https:// template",
    )
    if ".." in pipeline.split("/"):
        raise DeployKeyError(f"key 'vertex.pipeline': {pipeline!r} leaves the repository")
    parameters = table.get("parameters", {})
    if not isinstance(parameters, dict):
        raise DeployKeyError("key 'vertex.parameters' must be a table")
    root = table.get("pipeline_root")
    if root is not None and (not isinstance(root, str) or not root.startswith("gs://")):
        raise DeployKeyError(f"key 'vertex.pipeline_root': {root!r} is not a gs:// URI")
    account = table.get("service_account")
    if account is not None and (not isinstance(account, str) or "@" not in account):
        raise DeployKeyError(f"key 'vertex.service_account': {account!r} is not an email")
    return VertexConfig(pipeline, dict(parameters), root, account)
