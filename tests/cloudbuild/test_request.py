"""The generated Cloud Build request: its shape, what its scripts do, how it prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.cloud.devtools.cloudbuild_v1 import Build
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tests.cloudbuild.conftest import IMAGE, REPO_KEYS, VERTEX
from tests.cloudbuild.rules import invalid, step_environment
from trainhook.cli import main
from trainhook.settings import Settings
from worker.cloudbuild.render_yaml import to_yaml
from worker.cloudbuild.request import BuildInputs, build_request

SHA = "0123456789abcdef0123456789abcdef01234567"
SOURCE = "gs://octo-src/trainhook/sources/x/abc.tar.gz"
ENV = {
    "TRAINHOOK_BUILDER": "cloudbuild",
    "TRAINHOOK_GCP_PROJECT": "octo-project",
    "TRAINHOOK_GCP_REGION": "europe-west1",
    "TRAINHOOK_SOURCE_BUCKET": "gs://octo-src/trainhook",
}


@pytest.fixture
def configure(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    def build(vertex: bool = True, **env: str) -> Settings:
        return make_settings(extra=REPO_KEYS + (VERTEX if vertex else ""), env={**ENV, **env})

    return build


def request_for(settings: Settings, build_id: int = 7) -> dict[str, Any]:
    return build_request(settings, settings.repos[0], BuildInputs(build_id, SHA, "d" * 64, SOURCE))


def step(request: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in request["steps"] if s["id"] == step_id)


def test_steps_are_the_stage_names_with_deploy_and_vertex_after_push(configure):
    request = request_for(configure())
    assert [(s["id"], s.get("waitFor")) for s in request["steps"]] == [
        ("build", None),
        ("push", ["build"]),
        ("deploy", ["push"]),
        ("vertex", ["push"]),
    ]
    assert [s["id"] for s in request_for(configure(vertex=False))["steps"]] == [
        "build",
        "push",
        "deploy",
    ]


def test_cloud_build_would_accept_it_every_substitution_defined_and_used(configure):
    for settings in (configure(), configure(vertex=False)):
        assert invalid(request_for(settings)) is None


def test_the_image_is_built_from_the_previous_one_with_the_deps_key(configure):
    request = request_for(configure())
    args, subs = step(request, "build")["args"], request["substitutions"]
    assert "--cache-from=${_IMAGE}:latest" in args
    assert "--build-arg=TRAINHOOK_DEPS_KEY=${_DEPS_KEY}" in args
    assert "--label=trainhook.deps-key=${_DEPS_KEY}" in args
    assert {"--tag=${_IMAGE}:${_SHA}", "--tag=${_IMAGE}:latest"} <= set(args)
    assert step(request, "push")["args"] == ["push", "--all-tags", "${_IMAGE}"]
    assert (subs["_IMAGE"], subs["_SHA"], subs["_DEPS_KEY"]) == (IMAGE, SHA, "d" * 64)
    assert request["source"] == {
        "storageSource": {"bucket": "octo-src", "object": "trainhook/sources/x/abc.tar.gz"}
    }


def test_tags_timeout_and_queue_ttl_are_explicit(configure):
    request = request_for(
        configure(TRAINHOOK_CLOUDBUILD_TIMEOUT="1200", TRAINHOOK_CLOUDBUILD_QUEUE_TTL="600")
    )
    assert request["tags"] == [
        "trainhook",
        "trainhook-build-7",
        "github-octo-org--social-score-api",
    ]
    assert (request["timeout"], request["queueTtl"]) == ("1200s", "600s")
    assert step(request, "deploy")["timeout"] == "540s"  # rollout 240 s + margin


def test_a_build_service_account_logs_to_cloud_logging_only(configure):
    request = request_for(configure(TRAINHOOK_CLOUDBUILD_SERVICE_ACCOUNT="builder@octo.iam"))
    assert request["serviceAccount"] == "projects/octo-project/serviceAccounts/builder@octo.iam"
    assert request["options"] == {"logging": "CLOUD_LOGGING_ONLY"}


def test_the_client_takes_the_request_without_losing_a_field(configure):
    request = request_for(configure(TRAINHOOK_CLOUDBUILD_SERVICE_ACCOUNT="builder@octo.iam"))
    build = Build.from_json(json.dumps(request))  # unknown or misspelt fields raise here
    back = json.loads(Build.to_json(build, use_integers_for_enums=False))
    pairs = zip(back["steps"], request["steps"], strict=True)
    assert [{k: got[k] for k in sent} for got, sent in pairs] == request["steps"]
    assert (back["substitutions"], back["tags"]) == (request["substitutions"], request["tags"])
    assert (back["timeout"], back["queueTtl"]) == ("3600s", "3600s")
    assert (back["options"]["logging"], back["serviceAccount"]) == (
        "CLOUD_LOGGING_ONLY",
        request["serviceAccount"],
    )


def test_vertex_parameters_reach_the_step_with_the_build_values(configure):
    request = request_for(configure())
    _, env = step_environment(request, "vertex", "octo-project")
    assert json.loads(env["PARAMETERS"]) == {
        "image": f"{IMAGE}:{SHA}",
        "source": "${_SOURCE}".replace("${_SOURCE}", SOURCE),
        "budget": "$5",
    }
    assert (env["PIPELINE"], env["TRAINHOOK_BUILD"], env["REGION"]) == (
        "pipelines/train.json",
        "7",
        "europe-west1",
    )


# -- the scripts, run with stand-ins for gcloud, kubectl, curl, pip and aiplatform ------------

STUBS = {
    "gcloud": 'echo "gcloud $*" >> "$CALLS"\n',
    "curl": 'echo "curl $*" >> "$CALLS"\n[ -z "$FAIL_HEALTH" ] || exit 22\necho ok\n',
    "pip": 'echo "pip $*" >> "$CALLS"\n',
    "kubectl": """echo "kubectl $*" >> "$CALLS"
case "$*" in
  *"rollout status"*) [ -z "$FAIL_ROLLOUT" ] || exit 1 ;;
  *port-forward*) exec sleep 30 ;;
  *" get "*) printf 8080 ;;
esac
""",
    "python3": f'exec {sys.executable} -S "$@"\n',
}
AIPLATFORM = """import json, os

def _log(*what):
    with open(os.environ["CALLS"], "a") as out:
        out.write(json.dumps(what, sort_keys=True) + "\\n")

def init(**kwargs):
    _log("init", kwargs)

class PipelineJob:
    resource_name = "projects/p/locations/r/pipelineJobs/j"
    def __init__(self, **kwargs):
        _log("PipelineJob", kwargs)
    def submit(self, **kwargs):
        _log("submit", kwargs)
    def run(self, **kwargs):
        _log("run", kwargs)
    def wait(self):
        _log("wait")
"""


def run_step(
    request: dict[str, Any], step_id: str, tmp_path: Path, **extra: str
) -> tuple[int, list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in STUBS.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o755)
    fakes = tmp_path / "fakes" / "google" / "cloud"
    fakes.mkdir(parents=True, exist_ok=True)
    (fakes / "aiplatform.py").write_text(AIPLATFORM)
    script, env = step_environment(request, step_id, "octo-project")
    calls = tmp_path / "calls.log"
    env.update(
        PATH=f"{bin_dir}:/usr/bin:/bin",
        CALLS=str(calls),
        PYTHONPATH=str(tmp_path / "fakes"),
        HEALTH_ATTEMPTS="3",
        HEALTH_INTERVAL="0",
        **extra,
    )
    done = subprocess.run(
        ["bash", "-c", script], env=env, cwd=tmp_path, timeout=30, capture_output=True
    )
    lines = calls.read_text().splitlines() if calls.exists() else []
    return done.returncode, lines


DEPLOYMENT = "deployment/social-score-api"


def test_deploy_rolls_out_the_image_and_checks_health(configure, tmp_path):
    code, calls = run_step(request_for(configure()), "deploy", tmp_path)
    assert code == 0
    assert "gcloud container clusters get-credentials prod-cluster --location europe-west1" in calls
    assert f"kubectl -n scoring set image {DEPLOYMENT} api={IMAGE}:{SHA}" in calls
    assert f"kubectl -n scoring rollout status {DEPLOYMENT} --timeout=240s" in calls
    assert "curl -fsS --max-time 5 http://127.0.0.1:18080/healthz" in calls
    assert not any("rollout undo" in call for call in calls)


def test_a_rollout_that_does_not_finish_is_rolled_back(configure, tmp_path):
    code, calls = run_step(request_for(configure()), "deploy", tmp_path, FAIL_ROLLOUT="1")
    assert code == 1
    assert f"kubectl -n scoring rollout undo {DEPLOYMENT}" in calls
    assert not any(call.startswith("curl") for call in calls)


def test_a_failing_health_check_is_rolled_back(configure, tmp_path):
    code, calls = run_step(request_for(configure()), "deploy", tmp_path, FAIL_HEALTH="1")
    assert code == 1
    assert sum(call.startswith("curl") for call in calls) == 3
    assert calls[-1] == f"kubectl -n scoring rollout undo {DEPLOYMENT}"


def test_the_vertex_step_submits_the_pipeline_without_waiting(configure, tmp_path):
    code, calls = run_step(request_for(configure()), "vertex", tmp_path)
    assert code == 0
    logged = [json.loads(line) for line in calls if line.startswith("[")]
    names = [entry[0] for entry in logged]
    assert names == ["init", "PipelineJob", "submit"]  # never run() or wait()
    job = logged[1][1]
    assert job["template_path"] == "pipelines/train.json"
    assert job["parameter_values"]["image"] == f"{IMAGE}:{SHA}"
    assert job["labels"] == {"trainhook-build": "7"}
    assert logged[0][1] == {"project": "octo-project", "location": "europe-west1"}


# -- printing -----------------------------------------------------------------------------


def test_the_yaml_form_reads_back_as_the_same_request(configure):
    request = request_for(configure())
    text = to_yaml(request)
    assert yaml.safe_load(text) == request
    assert "      - |\n        set -euo pipefail\n" in text  # scripts print as blocks


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@hsettings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=10), json_values, max_size=5))
def test_any_json_like_document_survives_the_yaml_writer(document):
    assert yaml.safe_load(to_yaml(document)) == (document or None)


def test_cloudbuild_config_prints_the_request_as_yaml_or_json(configure, monkeypatch, capsys):
    settings = configure()
    for key, value in {**ENV, "TRAINHOOK_CONFIG": str(settings.config_path)}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("TRAINHOOK_HOME", str(settings.home))

    assert (
        main(["cloudbuild-config", "octo-org/social-score-api", "--format", "json", "--sha", SHA])
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["substitutions"]["_SHA"] == SHA
    assert [s["id"] for s in printed["steps"]] == ["build", "push", "deploy", "vertex"]

    assert main(["cloudbuild-config", "octo-org/social-score-api"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["substitutions"]["_SHA"] == "COMMIT_SHA" and shown["steps"] == printed["steps"]

    assert main(["cloudbuild-config", "octo-org/other"]) == 1
    assert "'octo-org/other' is not configured" in capsys.readouterr().err


def test_cloudbuild_config_names_what_is_missing(make_settings, monkeypatch, capsys):
    settings = make_settings()
    monkeypatch.setenv("TRAINHOOK_CONFIG", str(settings.config_path))
    monkeypatch.setenv("TRAINHOOK_HOME", str(settings.home))
    for key in ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)

    assert main(["cloudbuild-config", "octo-org/social-score-api"]) == 2
    err = capsys.readouterr().err
    assert "TRAINHOOK_GCP_PROJECT is not set" in err and "missing key 'image'" in err
    assert os.environ.get("TRAINHOOK_BUILDER") is None
