"""The k8s/ base as `kubectl apply -k` sends it.

kubectl's built-in kustomize renders it where kubectl is installed. Elsewhere the few
transformations this base uses (namespace, labels, images) are applied here, so schema and
Pod Security checks still run; where both exist a test checks that they agree.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

K8S = Path(__file__).resolve().parents[2] / "k8s"
CLUSTER_SCOPED = frozenset({"Namespace", "ClusterRole", "ClusterRoleBinding"})
POD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"})

Document = dict[str, Any]


def kubectl_render() -> list[Document] | None:
    """`kubectl kustomize k8s/`, or None without kubectl."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    done = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def _image(entry: dict[str, Any]) -> str:
    if "digest" in entry:
        return f"{entry['newName']}@{entry['digest']}"
    return f"{entry['newName']}:{entry['newTag']}"


def python_render() -> list[Document]:
    """The base with its kustomization's namespace, labels and images applied."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    images = {entry["name"]: _image(entry) for entry in kustomization.get("images", [])}
    labels: dict[str, str] = {}
    for entry in kustomization.get("labels", []):
        assert not entry.get("includeSelectors") and not entry.get("includeTemplates"), entry
        labels.update(entry["pairs"])
    out = []
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            if not doc:
                continue
            meta = doc["metadata"]
            meta["labels"] = {**meta.get("labels", {}), **labels}
            if doc["kind"] not in CLUSTER_SCOPED:
                meta["namespace"] = kustomization["namespace"]
            if doc["kind"] in POD_KINDS:
                for container in containers(pod_spec(doc)):
                    container["image"] = images.get(container["image"], container["image"])
            out.append(doc)
    return out


def render() -> list[Document]:
    return kubectl_render() or python_render()


def pod_spec(doc: Document) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Every container of a pod: init, regular and ephemeral."""
    return [
        *spec.get("initContainers", []),
        *spec["containers"],
        *spec.get("ephemeralContainers", []),
    ]
