"""The rendered k8s/ base: valid against the Kubernetes schemas, and Pod Security
"restricted" everywhere except the one documented exception, the worker container's sandbox
needs (an unmasked /proc and unconfined seccomp and AppArmor, in the pod's own user namespace).
"""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest

from tests.k8s.podsecurity import violations
from tests.k8s.render import (
    POD_KINDS,
    containers,
    kubectl_render,
    pod_spec,
    python_render,
    render,
)
from tests.support.required import unavailable

# The oldest Kubernetes the base supports (a pod's own user namespace: 1.33) and the newest
# schemas known.
VERSIONS = ["1.33.0", kubernetes_validate.latest_version()]
# Custom resources have no schema in the Kubernetes set: KEDA's, and no others.
CUSTOM = {"ScaledObject": "keda.sh/v1alpha1", "TriggerAuthentication": "keda.sh/v1alpha1"}

WORKER = "trainhook-worker"
# Exactly what the worker container needs for bubblewrap, and nothing else anywhere.
SANDBOX_EXCEPTION = {
    f"{WORKER}/worker: procMount=Unmasked",
    f"{WORKER}/worker: seccompProfile.type=Unconfined",
    f"{WORKER}/worker: appArmorProfile.type=Unconfined",
}


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return render()


def workloads(rendered: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = [doc for doc in rendered if doc["kind"] in POD_KINDS]
    assert found
    return found


@pytest.mark.parametrize("version", VERSIONS)
def test_every_rendered_object_is_valid_against_the_kubernetes_schema(rendered, version):
    for doc in rendered:
        if doc["kind"] in CUSTOM:
            assert doc["apiVersion"] == CUSTOM[doc["kind"]]
            continue
        # strict: a misspelt or misplaced field is an error, not silently dropped.
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_schema_check_refuses_a_misplaced_field(rendered):
    (worker,) = [d for d in workloads(rendered) if d["metadata"]["name"] == WORKER]
    broken = copy.deepcopy(worker)
    pod_spec(broken)["containers"][0]["seccompProfile"] = {"type": "RuntimeDefault"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[0], strict=True)


def test_the_worker_containers_sandbox_needs_are_the_only_departure_from_restricted(rendered):
    found: set[str] = set()
    for doc in workloads(rendered):
        template = doc["spec"]["template"]
        annotations = template.get("metadata", {}).get("annotations", {})
        found |= violations(doc["metadata"]["name"], template["spec"], annotations)
    assert found == SANDBOX_EXCEPTION


def test_the_exception_is_confined_to_a_pod_in_its_own_user_namespace(rendered):
    (worker,) = [d for d in workloads(rendered) if d["metadata"]["name"] == WORKER]
    spec = pod_spec(worker)
    assert spec["hostUsers"] is False
    # Its other containers (the migration) keep the pod's RuntimeDefault profile.
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


def test_every_pod_defaults_to_the_runtimes_seccomp_profile(rendered):
    for doc in workloads(rendered):
        assert pod_spec(doc)["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


def test_the_namespace_warns_and_audits_against_restricted(rendered):
    (namespace,) = [doc for doc in rendered if doc["kind"] == "Namespace"]
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"
    assert labels["pod-security.kubernetes.io/audit"] == "restricted"


def test_no_container_runs_a_moving_image_tag(rendered):
    for doc in workloads(rendered):
        for container in containers(pod_spec(doc)):
            image = container["image"]
            assert "@sha256:" in image or not image.endswith((":latest", "trainhook")), image


def test_the_fallback_rendering_matches_kubectls():
    by_kubectl = kubectl_render()
    if by_kubectl is None:
        unavailable("KUBECTL", "kubectl is not installed (its built-in kustomize renders the base)")

    def keyed(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
        return {(d["kind"], d["metadata"]["name"]): d for d in docs}

    assert keyed(python_render()) == keyed(by_kubectl)
    assert {d["metadata"].get("namespace") for d in by_kubectl if d["kind"] != "Namespace"} == {
        "trainhook"
    }


RESTRICTED_POD: dict[str, Any] = {
    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [
        {
            "name": "app",
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
            },
        }
    ],
    "volumes": [{"name": "tmp", "emptyDir": {}}],
}


def test_the_checker_passes_a_minimal_restricted_pod():
    assert violations("app", RESTRICTED_POD, {}) == set()


@pytest.mark.parametrize(
    ("change", "finding"),
    [
        (lambda s: s.update(hostNetwork=True), "app/pod: hostNetwork=true"),
        (lambda s: s.update(hostPID=True), "app/pod: hostPID=true"),
        (
            lambda s: s["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
            "app/pod: hostPath volume h",
        ),
        (lambda s: s["securityContext"].pop("seccompProfile"), "app/app: no seccompProfile"),
        (lambda s: s["securityContext"].pop("runAsNonRoot"), "app/app: runAsNonRoot is not true"),
        (lambda s: s["securityContext"].update(runAsUser=0), "app/pod: runAsUser=0"),
        (lambda s: c(s).update(privileged=True), "app/app: privileged=true"),
        (lambda s: c(s).update(procMount="Unmasked"), "app/app: procMount=Unmasked"),
        (
            lambda s: c(s).pop("allowPrivilegeEscalation"),
            "app/app: allowPrivilegeEscalation is not false",
        ),
        (
            lambda s: c(s)["capabilities"].update(add=["SYS_ADMIN"]),
            "app/app: capabilities.add SYS_ADMIN",
        ),
        (
            lambda s: c(s)["capabilities"].update(drop=["NET_RAW"]),
            "app/app: capabilities.drop lacks ALL",
        ),
        (
            lambda s: c(s).update(seccompProfile={"type": "Unconfined"}),
            "app/app: seccompProfile.type=Unconfined",
        ),
        (
            lambda s: c(s).update(appArmorProfile={"type": "Unconfined"}),
            "app/app: appArmorProfile.type=Unconfined",
        ),
        (
            lambda s: s["containers"][0].update(ports=[{"containerPort": 80, "hostPort": 80}]),
            "app/app: hostPort=80",
        ),
    ],
)
def test_the_checker_finds_each_departure_from_restricted(change, finding):
    spec = copy.deepcopy(RESTRICTED_POD)
    change(spec)
    assert violations("app", spec, {}) == {finding}


def c(spec: dict[str, Any]) -> dict[str, Any]:
    context: dict[str, Any] = spec["containers"][0]["securityContext"]
    return context
