"""The production keys of a repository: its image, `[repos.deploy]` and `[repos.vertex]`.

Values checked here end up in a Cloud Build request (as substitutions and step environment,
never spliced into a shell script) or in a container engine's `run` arguments, so they are
held to the formats GCP, Kubernetes and the engines accept.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trainhook.configcheck import Number, shown

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
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PIPELINE_RE = re.compile(r"^(?:gs://|https://)[^\s'\"$`\\]+$|^[A-Za-z0-9._][A-Za-z0-9._/-]*$")
IMAGE_FORMAT = "REGION-docker.pkg.dev/PROJECT/REPOSITORY/NAME"


class DeployKeyError(ValueError):
    """Bad values in one of the production tables; each of `problems` names its key."""

    def __init__(self, *problems: str) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class DeployConfig:
    """`[repos.deploy]`: the GKE Deployment whose container runs the image (cloudbuild), and
    how the container builders run it on this machine. Every key has a default, so a
    repository without the table deploys locally with `DeployConfig()`."""

    cluster: str = ""  # empty: no GKE keys given (refused with TRAINHOOK_BUILDER=cloudbuild)
    location: str = ""
    deployment: str = ""
    namespace: str = "default"
    container: str = ""  # empty: the Deployment's name
    health_path: str = "/healthz"
    timeout: int = 300  # seconds for `kubectl rollout status`, or for a local container's health
    port: int = 8080  # the port the app listens on inside its container (passed as PORT)
    predict_path: str = "/predict"  # the smoke test POSTs texts here and wants labels back
    memory: int | None = None  # bytes; None: the engine's default (no limit)
    cpus: float | None = None  # None: the engine's default (no limit)
    env: tuple[str, ...] = ()  # names copied from the worker's environment into the container

    @property
    def container_name(self) -> str:
        return self.container or self.deployment

    @property
    def gke(self) -> bool:
        """Whether the GKE keys are given (they come together: see `parse_deploy`)."""
        return bool(self.cluster)


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
        raise DeployKeyError(
            f"key 'image': {shown(value)}: expected {IMAGE_FORMAT} (no tag or digest)"
        )
    return value


def _table(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DeployKeyError(f"key {name!r}: got {shown(value)}, expected a table ([repos.{name}])")
    return value


def _string(table: str, key: str, value: Any, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise DeployKeyError(f"key '{table}.{key}': {shown(value)}: expected {what}")
    return value


def _collect(problems: list[str], check: Any, *args: Any) -> Any:
    """Run one check, keeping its problem (if any) so that every key is checked."""
    try:
        return check(*args)
    except DeployKeyError as exc:
        problems.extend(exc.problems)
        return None


DEPLOY_KEYS = (
    "cluster", "location", "namespace", "deployment", "container", "health_path",
    "port", "predict_path", "memory", "cpus", "env",
)  # fmt: skip
GKE_KEYS = ("cluster", "location", "deployment")
DEPLOY_TIMEOUT = Number("duration", 10, 7200)
DEPLOY_PORT = Number("int", 1, 65535)
# A container below 16M does not start an interpreter; a cap keeps a typo (`512G`) visible.
DEPLOY_MEMORY = Number("size", 16 * 2**20, 2**40)
DEPLOY_CPUS = Number("float", 0, 256, "CPUs", low_open=True)
# Set by trainhook itself: a repository cannot point the app at another port through `env`.
RESERVED_ENV = frozenset({"PORT"})


def _timeout(value: Any) -> int:
    try:
        seconds = DEPLOY_TIMEOUT.parse(value)
    except ValueError:
        raise DeployKeyError(
            f"key 'deploy.timeout': {shown(value)}: expected {DEPLOY_TIMEOUT.describe()}"
        ) from None
    if seconds != int(seconds):
        raise DeployKeyError(
            f"key 'deploy.timeout': {shown(value)}: expected whole seconds (kubectl's --timeout)"
        )
    return int(seconds)


def _number(key: str, spec: Number, value: Any) -> float:
    try:
        return spec.parse(value)
    except ValueError:
        raise DeployKeyError(
            f"key 'deploy.{key}': {shown(value)}: expected {spec.describe()}"
        ) from None


def _env_names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DeployKeyError(f"key 'deploy.env': {shown(value)}: expected a list of names")
    bad = [v for v in value if not ENV_NAME_RE.fullmatch(v) or v in RESERVED_ENV]
    if bad:
        raise DeployKeyError(
            f"key 'deploy.env': {shown(bad)}: expected environment variable names "
            f"(letters, digits, '_'; not {', '.join(sorted(RESERVED_ENV))}, which trainhook sets)"
        )
    return tuple(dict.fromkeys(value))


def parse_deploy(value: Any) -> DeployConfig:
    """Validate `[repos.deploy]`; raises DeployKeyError naming every key at fault. The GKE
    keys come together: a table naming any of them must name `cluster`, `location` and
    `deployment`; a table of local keys only (`port`, `env`, ...) names none."""
    table = _table("deploy", value)
    problems = [
        f"unknown key 'deploy.{key}' = {shown(table[key])}"
        for key in sorted(set(table) - {*DEPLOY_KEYS, "timeout"})
    ]
    if set(table) & {*GKE_KEYS, "namespace", "container"}:
        for key in GKE_KEYS:
            if key not in table:
                problems.append(f"missing required key 'deploy.{key}'")
    name = "a Kubernetes/GKE name (lowercase letters, digits, '-')"
    checks = {
        "cluster": (K8S_NAME_RE, name),
        "namespace": (K8S_NAME_RE, name),
        "deployment": (K8S_NAME_RE, name),
        "container": (K8S_NAME_RE, name),
        "location": (LOCATION_RE, "a region or zone (europe-west1)"),
        "health_path": (HEALTH_PATH_RE, "a URL path ('/…')"),
        "predict_path": (HEALTH_PATH_RE, "a URL path ('/…')"),
    }
    out: dict[str, Any] = {}
    for key, (pattern, what) in checks.items():
        if key in table:
            out[key] = _collect(problems, _string, "deploy", key, table[key], pattern, what)
    if "timeout" in table:
        out["timeout"] = _collect(problems, _timeout, table["timeout"])
    if "port" in table:
        port = _collect(problems, _number, "port", DEPLOY_PORT, table["port"])
        out["port"] = None if port is None else int(port)
    if "memory" in table:
        memory = _collect(problems, _number, "memory", DEPLOY_MEMORY, table["memory"])
        out["memory"] = None if memory is None else int(memory)
    if "cpus" in table:
        out["cpus"] = _collect(problems, _number, "cpus", DEPLOY_CPUS, table["cpus"])
    if "env" in table:
        out["env"] = _collect(problems, _env_names, table["env"])
    if problems:
        raise DeployKeyError(*problems)
    return DeployConfig(**out)


def parse_vertex(value: Any) -> VertexConfig:
    """Validate `[repos.vertex]`; raises DeployKeyError naming every key at fault."""
    table = _table("vertex", value)
    known = {"pipeline", "parameters", "pipeline_root", "service_account"}
    problems = [
        f"unknown key 'vertex.{key}' = {shown(table[key])}" for key in sorted(set(table) - known)
    ]
    pipeline = None
    if "pipeline" not in table:
        problems.append("missing required key 'vertex.pipeline'")
    else:
        pipeline = _collect(
            problems,
            _string,
            "vertex",
            "pipeline",
            table["pipeline"],
            PIPELINE_RE,
            "a path in the repository, a gs:// URI or an https:// template",
        )
    if pipeline is not None and ".." in pipeline.split("/"):
        problems.append(f"key 'vertex.pipeline': {pipeline!r} leaves the repository")
    parameters = table.get("parameters", {})
    if not isinstance(parameters, dict):
        problems.append(f"key 'vertex.parameters': got {shown(parameters)}, expected a table")
    root = table.get("pipeline_root")
    if root is not None and (not isinstance(root, str) or not root.startswith("gs://")):
        problems.append(f"key 'vertex.pipeline_root': {shown(root)}: expected a gs:// URI")
    account = table.get("service_account")
    if account is not None and (not isinstance(account, str) or "@" not in account):
        problems.append(f"key 'vertex.service_account': {shown(account)}: expected an email")
    if problems or pipeline is None:
        raise DeployKeyError(*problems)
    return VertexConfig(pipeline, dict(parameters), root, account)
