"""Every configuration example the documentation shows is accepted by the code that reads it.

The README's TOML blocks, the defaults and example values of its variable tables and prose,
and the settings shipped in k8s/config.yaml are parsed by the same functions trainhook runs at
start, so a stricter check or a renamed key cannot leave the documentation wrong unnoticed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from trainhook.repos import load_repos
from trainhook.settings import NUMBERS, load_settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")

# A repository with every required key: README fragments of single keys are read inside it.
REPO_HEAD = """[[repos]]
name = "octo-org/social-score-api"
clone_url = "https://github.com/octo-org/social-score-api.git"
secret_env = "GITHUB_WEBHOOK_SECRET"
"""
PRODUCTION_KEYS = """image = "europe-west1-docker.pkg.dev/my-project/models/social-score-api"
[repos.deploy]
cluster = "ml"
location = "europe-west1"
deployment = "social-score-api"
"""
# Everything any documented value may need around it: the pubsub queue's project, Cloud
# Build's project, region and bucket, and what prod asks for.
CONTEXT = {
    "TRAINHOOK_PUBSUB_PROJECT": "my-project",
    "TRAINHOOK_GCP_PROJECT": "my-project",
    "TRAINHOOK_GCP_REGION": "europe-west1",
    "TRAINHOOK_SOURCE_BUCKET": "gs://my-project-trainhook/sources",
    "TRAINHOOK_DATABASE_URL": "postgresql+psycopg://trainhook@db/trainhook",
    "TRAINHOOK_API_TOKEN": "a-token-long-enough-for-prod",
    "GITHUB_WEBHOOK_SECRET": "a-secret",
}
# Placeholders, not values: `$TRAINHOOK_HOME/...`, `<name>-dead`, `…`.
PLACEHOLDER = re.compile(r"[$<…]")


def _toml_blocks() -> list[str]:
    return re.findall(r"^```toml\n(.*?)^```", README, flags=re.DOTALL | re.MULTILINE)


def _documented_values() -> list[tuple[str, str]]:
    """(variable, value) for each default in a table row and each `NAME=value` in prose."""
    found: list[tuple[str, str]] = []
    for line in README.splitlines():
        row = re.match(r"\| (`[^|]*?)(?: \[(.*?)\])? \|", line)
        if row and row.group(2) and "`TRAINHOOK_" in row.group(1):
            names = re.findall(r"`(TRAINHOOK_[A-Z_]+|_[A-Z_]+)`", row.group(1))
            values = re.findall(r"`([^`]*)`", row.group(2))
            full = [names[0]] + [
                n if n.startswith("TRAINHOOK_") else names[0].rsplit("_", 1)[0] + n
                for n in names[1:]
            ]
            if len(values) == 1:
                values *= len(full)
            found.extend(zip(full, values, strict=True))
        found.extend(re.findall(r"`(TRAINHOOK_[A-Z_]+)=([^`\s]+)`", line))
    # TRAINHOOK_CONFIG names the file each test writes itself.
    return [
        (name, value)
        for name, value in found
        if not PLACEHOLDER.search(value) and name != "TRAINHOOK_CONFIG"
    ]


def _repos_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trainhook.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_readme_has_examples_to_check():
    assert len(_toml_blocks()) >= 4
    names = {name for name, _ in _documented_values()}
    assert {"TRAINHOOK_BODY_LIMIT", "TRAINHOOK_LEASE_SECONDS", "TRAINHOOK_QUEUE"} <= names


@pytest.mark.parametrize("block", _toml_blocks(), ids=lambda b: b.splitlines()[0][:40])
def test_every_toml_example_in_the_readme_is_accepted(tmp_path: Path, block: str):
    text = block if "[[repos]]" in block else REPO_HEAD + block
    repos = load_repos(_repos_file(tmp_path, text))
    assert repos and repos[0].name


def test_the_readme_deploy_examples_mean_five_minutes(tmp_path: Path):
    blocks = [b for b in _toml_blocks() if "[repos.deploy]" in b]
    assert blocks
    for block in blocks:
        text = block if block.startswith("[[repos]]") else REPO_HEAD + block
        repo = load_repos(_repos_file(tmp_path, text))[0]
        assert repo.deploy is not None and repo.deploy.timeout == 300


@pytest.mark.parametrize(("name", "value"), _documented_values(), ids=lambda v: str(v)[:40])
def test_every_documented_variable_value_is_accepted(tmp_path: Path, name: str, value: str):
    config = _repos_file(tmp_path, REPO_HEAD + PRODUCTION_KEYS)
    settings = load_settings({**CONTEXT, "TRAINHOOK_CONFIG": str(config), name: value})
    if name in NUMBERS:
        field, spec, _ = NUMBERS[name]
        assert getattr(settings, field) == spec.parse(value)


def _k8s_configmaps() -> dict[str, dict[str, str]]:
    docs = yaml.safe_load_all((ROOT / "k8s" / "config.yaml").read_text(encoding="utf-8"))
    return {d["metadata"]["name"]: d["data"] for d in docs if d and d["kind"] == "ConfigMap"}


def test_the_k8s_repositories_file_is_accepted(tmp_path: Path):
    [text] = [v for data in _k8s_configmaps().values() for k, v in data.items() if ".toml" in k]
    repos = load_repos(_repos_file(tmp_path, text))
    assert repos and all(r.deploy is not None for r in repos)


def _k8s_container_env() -> dict[str, str]:
    """`env` values set on the containers of every manifest in k8s/."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            pod = (doc or {}).get("spec", {}).get("template", {}).get("spec", {})
            pod = pod or (doc or {}).get("spec", {}).get("jobTemplate", {})
            for container in pod.get("containers", []) + pod.get("initContainers", []):
                found.update(
                    {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
                )
    return found


def test_every_k8s_setting_is_accepted_on_its_own(tmp_path: Path):
    config = _repos_file(tmp_path, REPO_HEAD + PRODUCTION_KEYS)
    values = {
        name: value
        for data in [*_k8s_configmaps().values(), _k8s_container_env()]
        for name, value in data.items()
        if name.startswith("TRAINHOOK_") and name != "TRAINHOOK_CONFIG"
    }
    assert "TRAINHOOK_WORKER_PORT" in values
    assert values
    for name, value in values.items():
        load_settings({**CONTEXT, "TRAINHOOK_CONFIG": str(config), name: str(value)})
