"""The Cloud Build request of one build, generated in code (JSON shape of the REST API).

Steps (ids are the contract stage names): `build` (docker, BuildKit, `--cache-from` the
previous image, the deps key as a build arg and label) → `push` (`:SHA` and `:latest`) →
`deploy` (`kubectl set image`, `rollout status --timeout`, an HTTP health check through
`kubectl port-forward`, `rollout undo` when either fails) ∥ `vertex` (submits a Vertex AI
PipelineJob and returns without waiting for it). Per-repository and per-build values travel as
substitutions and reach scripts only as environment variables, never spliced into shell text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from trainhook.gcs import split_bucket
from trainhook.repos import RepoConfig
from trainhook.settings import Settings

DOCKER = "gcr.io/cloud-builders/docker"
KUBECTL = "gcr.io/cloud-builders/kubectl"
PYTHON = "python:3.11-slim"
VERTEX_STEP_TIMEOUT = 900
DEPLOY_STEP_MARGIN = 300  # get-credentials, health check and a rollback beyond the rollout
HEALTH_ATTEMPTS, HEALTH_INTERVAL = 30, 2
TAG_RE = re.compile(r"[^\w.-]")
PLACEHOLDERS = {
    "{image}": "${_IMAGE}:${_SHA}",
    "{sha}": "${_SHA}",
    "{build_id}": "${_TRAINHOOK_BUILD}",
    "{source}": "${_SOURCE}",
}

DEPLOY_SCRIPT = r"""set -euo pipefail
target="deployment/$DEPLOYMENT"
rollback() {
  echo "trainhook: $1; rolling $target back" >&2
  kubectl -n "$NAMESPACE" rollout undo "$target" || true
  exit 1
}
gcloud container clusters get-credentials "$CLUSTER" --location "$LOCATION"
kubectl -n "$NAMESPACE" set image "$target" "$CONTAINER=$IMAGE"
kubectl -n "$NAMESPACE" rollout status "$target" --timeout="${ROLLOUT_TIMEOUT}s" \
  || rollback "rollout of $IMAGE did not complete within ${ROLLOUT_TIMEOUT}s"
query="{.spec.template.spec.containers[?(@.name==\"$CONTAINER\")].ports[0].containerPort}"
port=$(kubectl -n "$NAMESPACE" get "$target" -o "jsonpath=$query" || true)
kubectl -n "$NAMESPACE" port-forward "$target" "18080:${port:-8080}" \
  >/tmp/trainhook-port-forward.log 2>&1 &
forward=$!
trap 'kill "$forward" 2>/dev/null || true' EXIT
for attempt in $(seq 1 "$HEALTH_ATTEMPTS"); do
  if curl -fsS --max-time 5 "http://127.0.0.1:18080$HEALTH_PATH"; then
    echo
    echo "trainhook: $HEALTH_PATH of $IMAGE answered (attempt $attempt)"
    exit 0
  fi
  sleep "$HEALTH_INTERVAL"
done
rollback "health check $HEALTH_PATH of $IMAGE failed $HEALTH_ATTEMPTS times"
"""

VERTEX_SCRIPT = r"""set -euo pipefail
pip install --quiet --disable-pip-version-check --root-user-action=ignore \
  "google-cloud-aiplatform>=1.60"
python3 - <<'PY'
import json, os
from google.cloud import aiplatform

aiplatform.init(project=os.environ["PROJECT"], location=os.environ["REGION"])
job = aiplatform.PipelineJob(
    display_name=os.environ["DISPLAY_NAME"],
    template_path=os.environ["PIPELINE"],
    parameter_values=json.loads(os.environ["PARAMETERS"]),
    pipeline_root=os.environ.get("PIPELINE_ROOT") or None,
    labels={"trainhook-build": os.environ["TRAINHOOK_BUILD"]},
)
job.submit(service_account=os.environ.get("SERVICE_ACCOUNT") or None)
print("trainhook: submitted", job.resource_name, "(not awaited)")
PY
"""


@dataclass(frozen=True)
class BuildInputs:
    """What changes from build to build: the trainhook build, the commit, the deps key and the
    uploaded source bundle (`gs://bucket/object`)."""

    build_id: int
    sha: str
    deps_key: str
    source: str


def example_inputs(
    settings: Settings, repo: RepoConfig, *, sha: str | None = None, build_id: int = 0
) -> BuildInputs:
    """Inputs for showing a request outside a build: placeholders for what only a build
    knows (the commit unless given, the deps key, the uploaded bundle's digest)."""
    source = f"{settings.source_bucket}/sources/{repo.slug}/BUNDLE_SHA256.tar.gz"
    return BuildInputs(build_id, sha or "COMMIT_SHA", "DEPS_KEY", source)


def build_tag(build_id: int) -> str:
    """The Cloud Build tag that identifies trainhook build `build_id` (the idempotency key)."""
    return f"trainhook-build-{build_id}"


def repo_tag(repo: RepoConfig) -> str:
    return TAG_RE.sub("-", repo.slug)[:128]


def escape(text: str) -> str:
    """Literal text for a Cloud Build field: `$` would start a substitution, `$$` does not."""
    return text.replace("$", "$$")


def _vertex_parameters(parameters: dict[str, Any]) -> str:
    text = escape(json.dumps(parameters, sort_keys=True, ensure_ascii=False))
    for placeholder, reference in PLACEHOLDERS.items():
        text = text.replace(placeholder, reference)
    return text


def _steps(repo: RepoConfig, settings: Settings) -> list[dict[str, Any]]:
    assert repo.deploy is not None
    steps: list[dict[str, Any]] = [
        {
            "id": "build",
            "name": DOCKER,
            "env": ["DOCKER_BUILDKIT=1"],
            "args": [
                "build",
                "--cache-from=${_IMAGE}:latest",
                "--build-arg=BUILDKIT_INLINE_CACHE=1",
                "--build-arg=TRAINHOOK_DEPS_KEY=${_DEPS_KEY}",
                "--label=trainhook.deps-key=${_DEPS_KEY}",
                "--label=trainhook.build=${_TRAINHOOK_BUILD}",
                "--label=org.opencontainers.image.revision=${_SHA}",
                "--tag=${_IMAGE}:${_SHA}",
                "--tag=${_IMAGE}:latest",
                ".",
            ],
        },
        {
            "id": "push",
            "name": DOCKER,
            "args": ["push", "--all-tags", "${_IMAGE}"],
            "waitFor": ["build"],
        },
        {
            "id": "deploy",
            "name": KUBECTL,
            "entrypoint": "bash",
            "args": ["-c", escape(DEPLOY_SCRIPT)],
            "env": [
                "CLOUDSDK_CORE_PROJECT=${PROJECT_ID}",
                "CLUSTER=${_CLUSTER}",
                "LOCATION=${_LOCATION}",
                "NAMESPACE=${_NAMESPACE}",
                "DEPLOYMENT=${_DEPLOYMENT}",
                "CONTAINER=${_CONTAINER}",
                "IMAGE=${_IMAGE}:${_SHA}",
                "HEALTH_PATH=${_HEALTH_PATH}",
                "ROLLOUT_TIMEOUT=${_ROLLOUT_TIMEOUT}",
                f"HEALTH_ATTEMPTS={HEALTH_ATTEMPTS}",
                f"HEALTH_INTERVAL={HEALTH_INTERVAL}",
            ],
            "waitFor": ["push"],
            "timeout": f"{repo.deploy.timeout + DEPLOY_STEP_MARGIN}s",
        },
    ]
    if repo.vertex is not None:
        vertex = repo.vertex
        env = [
            "PROJECT=${PROJECT_ID}",
            "REGION=${_REGION}",
            "PIPELINE=" + escape(vertex.pipeline),
            "PARAMETERS=" + _vertex_parameters(dict(vertex.parameters)),
            f"DISPLAY_NAME=trainhook-{repo_tag(repo)[:100]}-${{_TRAINHOOK_BUILD}}",
            "TRAINHOOK_BUILD=${_TRAINHOOK_BUILD}",
        ]
        if vertex.pipeline_root:
            env.append("PIPELINE_ROOT=" + escape(vertex.pipeline_root))
        if vertex.service_account:
            env.append("SERVICE_ACCOUNT=" + escape(vertex.service_account))
        steps.append(
            {
                "id": "vertex",
                "name": PYTHON,
                "entrypoint": "bash",
                "args": ["-c", escape(VERTEX_SCRIPT)],
                "env": env,
                "waitFor": ["push"],  # in parallel with deploy; the pipeline is not awaited
                "timeout": f"{VERTEX_STEP_TIMEOUT}s",
            }
        )
    return steps


SUBSTITUTION_RE = re.compile(r"\$\$|\$\{(\w+)\}|\$(\w+)")


def referenced(value: Any) -> set[str]:
    """The substitution names a request (or any part of it) refers to."""
    if isinstance(value, dict):
        return set().union(*(referenced(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(referenced(v) for v in value))
    if isinstance(value, str):
        return {
            m.group(1) or m.group(2) for m in SUBSTITUTION_RE.finditer(value) if m.group(0) != "$$"
        }
    return set()


def build_request(settings: Settings, repo: RepoConfig, inputs: BuildInputs) -> dict[str, Any]:
    """The Build resource (camelCase JSON) for `repo` at `inputs`. Deterministic: the same
    inputs give the same request. Only substitutions the steps use are defined (Cloud Build
    refuses unused ones)."""
    if repo.image is None or repo.deploy is None:
        raise ValueError(f"repository {repo.name!r} has no image or [repos.deploy]")
    bucket, obj = split_bucket(inputs.source)
    deploy = repo.deploy
    values = {
        "_IMAGE": repo.image,
        "_SHA": inputs.sha,
        "_DEPS_KEY": inputs.deps_key,
        "_TRAINHOOK_BUILD": str(inputs.build_id),
        "_SOURCE": inputs.source,
        "_REGION": settings.gcp_region or "",
        "_CLUSTER": deploy.cluster,
        "_LOCATION": deploy.location,
        "_NAMESPACE": deploy.namespace,
        "_DEPLOYMENT": deploy.deployment,
        "_CONTAINER": deploy.container_name,
        "_HEALTH_PATH": deploy.health_path,
        "_ROLLOUT_TIMEOUT": str(deploy.timeout),
    }
    steps = _steps(repo, settings)
    used = referenced(steps)
    request: dict[str, Any] = {
        "source": {"storageSource": {"bucket": bucket, "object": obj}},
        "steps": steps,
        "images": ["${_IMAGE}:${_SHA}", "${_IMAGE}:latest"],
        "substitutions": {k: v for k, v in values.items() if k in used},
        "tags": ["trainhook", build_tag(inputs.build_id), repo_tag(repo)],
        "timeout": f"{settings.cloudbuild_timeout:.0f}s",
        "queueTtl": f"{settings.cloudbuild_queue_ttl:.0f}s",
    }
    if settings.cloudbuild_service_account:
        account = settings.cloudbuild_service_account
        request["serviceAccount"] = f"projects/{settings.gcp_project}/serviceAccounts/{account}"
        request["options"] = {"logging": "CLOUD_LOGGING_ONLY"}  # required with a user account
    return request
