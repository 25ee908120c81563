"""The kustomize base in k8s/: parsed with PyYAML and checked against the code it runs.

Pod Security and the Kubernetes schemas are checked in test_pod_security.py, on the
rendered base (tests/k8s/render.py).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from trainhook.deployconfig import IMAGE_RE
from trainhook.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"


def documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    return documents("kustomization.yaml")[0]


@pytest.fixture(scope="module")
def resources(kustomization: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for name in kustomization["resources"]:
        for doc in documents(name):
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def pod_spec(resources: dict, kind: str, name: str) -> dict[str, Any]:
    workload = resources[(kind, name)]
    return workload["spec"]["template"]["spec"]


def env_config(resources: dict) -> dict[str, str]:
    return resources[("ConfigMap", "trainhook-env")]["data"]


WORKLOADS = [
    ("Deployment", "trainhook-service", "serve"),
    ("Deployment", "trainhook-worker", "worker"),
]


def test_every_resource_listed_exists_and_is_a_kubernetes_object(kustomization):
    for name in kustomization["resources"]:
        assert (K8S / name).is_file(), name
        for doc in documents(name):
            assert {"apiVersion", "kind", "metadata"} <= set(doc), name
    assert "secret.example.yaml" not in kustomization["resources"]


@pytest.mark.parametrize(("kind", "name", "command"), WORKLOADS)
def test_each_workload_runs_its_command_from_the_trainhook_image(resources, kind, name, command):
    (container,) = pod_spec(resources, kind, name)["containers"]
    assert container["image"] == "trainhook"  # set by the kustomization's images entry
    assert container["args"][0] == command


def test_the_image_is_set_once_to_an_artifact_registry_name(kustomization):
    (entry,) = kustomization["images"]
    assert entry["name"] == "trainhook" and IMAGE_RE.fullmatch(entry["newName"])


def test_the_image_reference_is_immutable_a_release_tag_or_a_digest(kustomization):
    (entry,) = kustomization["images"]
    tag, digest = entry.get("newTag"), entry.get("digest")
    assert (tag is None) != (digest is None), "exactly one of newTag and digest"
    if digest is not None:
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), digest
    else:
        # A moving tag (latest, main, stable...) lets a restarted pod run other code.
        assert re.fullmatch(r"v?\d+\.\d+\.\d+(-[0-9A-Za-z.]+)?", str(tag)), tag


@pytest.mark.parametrize(("kind", "name", "command"), WORKLOADS)
def test_every_pod_migrates_the_schema_from_its_own_image_before_it_starts(
    resources, kind, name, command
):
    spec = pod_spec(resources, kind, name)
    (init,) = spec["initContainers"]
    (container,) = spec["containers"]
    assert init["args"] == ["migrate"] and init["image"] == container["image"]
    # The same settings (database URL included) as the container it prepares.
    assert init["envFrom"] == container["envFrom"]


def test_no_job_is_left_to_order_by_hand(resources):
    assert not [key for key in resources if key[0] in ("Job", "CronJob")]


@pytest.mark.parametrize(("kind", "name", "command"), WORKLOADS)
def test_every_container_requests_cpu_and_memory_and_has_a_memory_limit(
    resources, kind, name, command
):
    spec = pod_spec(resources, kind, name)
    for container in [*spec["initContainers"], *spec["containers"]]:
        wanted = container["resources"]
        assert {"cpu", "memory"} <= set(wanted["requests"]), container["name"]
        # No CPU limit: throttling a training run helps nobody; memory is what evicts.
        assert set(wanted["limits"]) >= {"memory"} and "cpu" not in wanted["limits"]


def test_the_service_probes_healthz_and_readyz_on_the_port_it_serves(resources):
    (container,) = pod_spec(resources, "Deployment", "trainhook-service")["containers"]
    (port,) = container["ports"]
    args = container["args"]
    assert str(port["containerPort"]) == args[args.index("--port") + 1]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    service = resources[("Service", "trainhook")]
    labels = resources[("Deployment", "trainhook-service")]["spec"]["template"]["metadata"]
    assert service["spec"]["selector"].items() <= labels["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]


def test_the_worker_is_probed_and_scraped_on_its_worker_port(resources):
    pod = resources[("Deployment", "trainhook-worker")]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    (port,) = container["ports"]
    assert str(port["containerPort"]) == env["TRAINHOOK_WORKER_PORT"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == env["TRAINHOOK_WORKER_PORT"]
    # A worker idle between polls must never look dead: the probe allows minutes.
    probe = container["livenessProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 60


def test_env_names_are_settings_the_code_reads(resources):
    source = "\n".join(p.read_text() for p in (ROOT / "trainhook").glob("*.py"))
    secret = documents("secret.example.yaml")[0]["stringData"]
    for name in [*env_config(resources), *secret]:
        if name.startswith("TRAINHOOK_"):
            assert f'"{name}"' in source, f"{name} is not read by trainhook"
    repos = tomllib.loads(resources[("ConfigMap", "trainhook-repos")]["data"]["trainhook.toml"])
    webhook_secrets = {repo["secret_env"] for repo in repos["repos"]}
    assert {n for n in secret if not n.startswith("TRAINHOOK_")} == webhook_secrets


def test_the_shipped_configuration_starts_in_prod(resources, tmp_path):
    config = tmp_path / "trainhook.toml"
    config.write_text(resources[("ConfigMap", "trainhook-repos")]["data"]["trainhook.toml"])
    secret = documents("secret.example.yaml")[0]["stringData"]
    env = {**env_config(resources), **secret, "TRAINHOOK_CONFIG": str(config)}
    env["TRAINHOOK_HOME"] = str(tmp_path / "home")
    settings = load_settings(env)
    assert (settings.env, settings.queue, settings.builder) == ("prod", "pubsub", "cloudbuild")
    assert settings.repos[0].deploy is not None


def test_the_repositories_file_is_mounted_where_trainhook_config_points(resources):
    config = Path(env_config(resources)["TRAINHOOK_CONFIG"])
    for name in ("trainhook-service", "trainhook-worker"):
        spec = pod_spec(resources, "Deployment", name)
        (container,) = spec["containers"]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert Path(mounts["repos"]) == config.parent
        assert volumes["repos"]["configMap"]["name"] == "trainhook-repos"


def test_the_worker_scales_on_its_pubsub_subscription(resources):
    scaled = resources[("ScaledObject", "trainhook-worker")]["spec"]
    target = scaled["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "trainhook-worker")
    assert ("Deployment", target["name"]) in resources
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "gcp-pubsub"
    subscription = env_config(resources)["TRAINHOOK_PUBSUB_SUBSCRIPTION"]
    assert trigger["metadata"]["subscriptionName"] == subscription == "trainhook-worker"
    assert ("TriggerAuthentication", trigger["authenticationRef"]["name"]) in resources


@pytest.mark.parametrize(("kind", "name", "command"), WORKLOADS)
def test_pods_run_as_the_images_non_root_user_with_workload_identity(
    resources, kind, name, command
):
    spec = pod_spec(resources, kind, name)
    account = resources[("ServiceAccount", spec["serviceAccountName"])]
    assert account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].endswith(
        ".iam.gserviceaccount.com"
    )
    user = re.search(r"^USER (\d+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert user is not None
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == int(user.group(1)) != 0
    (container,) = spec["containers"]
    refs = {ref.get("secretRef", {}).get("name") for ref in container["envFrom"]}
    assert "trainhook-secrets" in refs


def test_the_secret_example_holds_placeholders_only():
    secret = documents("secret.example.yaml")[0]
    assert secret["metadata"]["name"] == "trainhook-secrets"
    assert all("REPLACE_ME" in value for value in secret["stringData"].values())
