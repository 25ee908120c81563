"""TRAINHOOK_BUILDER=cloudbuild configuration: environment, per-repository keys, start-up errors."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from trainhook.errors import ConfigError
from trainhook.settings import Settings

IMAGE = "europe-west1-docker.pkg.dev/octo-project/models/social-score-api"
DEPLOY = """
image = "{image}"
[repos.deploy]
cluster = "prod-cluster"
location = "europe-west1"
deployment = "social-score-api"
{deploy_extra}
"""
CLOUD_ENV = {
    "TRAINHOOK_BUILDER": "cloudbuild",
    "TRAINHOOK_GCP_PROJECT": "octo-project",
    "TRAINHOOK_GCP_REGION": "europe-west1",
    "TRAINHOOK_SOURCE_BUCKET": "gs://octo-sources/trainhook",
}

Make = Callable[..., Settings]


def repo_keys(image: str = IMAGE, deploy_extra: str = "", more: str = "") -> str:
    return DEPLOY.format(image=image, deploy_extra=deploy_extra) + more


def test_cloudbuild_settings_and_repository_keys_are_read_with_their_defaults(
    make_settings: Make,
):
    vertex = '[repos.vertex]\npipeline = "pipelines/train.json"\nparameters = {epochs = 3}\n'
    settings = make_settings(
        extra=repo_keys(more=vertex),
        env={**CLOUD_ENV, "TRAINHOOK_CLOUDBUILD_ENDPOINT": "http://127.0.0.1:9999/"},
    )
    assert (settings.gcp_project, settings.gcp_region) == ("octo-project", "europe-west1")
    assert settings.source_bucket == "gs://octo-sources/trainhook"
    assert settings.cloudbuild_endpoint == "http://127.0.0.1:9999"
    repo = settings.repos[0]
    assert repo.image == IMAGE and repo.supersede is True
    assert repo.deploy is not None
    assert (repo.deploy.namespace, repo.deploy.container_name) == ("default", "social-score-api")
    assert (repo.deploy.health_path, repo.deploy.timeout) == ("/healthz", 300)
    assert repo.vertex is not None and dict(repo.vertex.parameters) == {"epochs": 3}


def test_missing_environment_is_one_error_naming_every_variable(make_settings: Make):
    with pytest.raises(ConfigError) as caught:
        make_settings(extra=repo_keys(), env={"TRAINHOOK_BUILDER": "cloudbuild"})
    message = str(caught.value)
    for name in ("TRAINHOOK_GCP_PROJECT", "TRAINHOOK_GCP_REGION", "TRAINHOOK_SOURCE_BUCKET"):
        assert name in message


def test_the_local_builder_needs_none_of_it(make_settings: Make):
    settings = make_settings(env={"TRAINHOOK_BUILDER": "local"})
    assert settings.builder == "local" and settings.repos[0].image is None


def test_a_repository_without_image_or_deploy_table_is_refused_by_name(make_settings: Make):
    with pytest.raises(ConfigError) as caught:
        make_settings(env=CLOUD_ENV)
    message = str(caught.value)
    assert "'octo-org/social-score-api'" in message
    assert "missing key 'image'" in message and "[repos.deploy]" in message


@pytest.mark.parametrize(
    ("image", "builder"),
    [
        ("gcr.io/octo-project/social-score-api", "local"),
        (IMAGE + ":latest", "cloudbuild"),
        ("europe-west1-docker.pkg.dev/octo-project/social-score-api", "cloudbuild"),
        ("europe-west1-docker.pkg.dev/Octo/models/app", "cloudbuild"),
    ],
)
def test_an_image_not_in_artifact_registry_format_is_refused(
    make_settings: Make, image: str, builder: str
):
    with pytest.raises(ConfigError, match=r"trainhook.toml: repository .*key 'image'.*REGION"):
        make_settings(extra=repo_keys(image=image), env={**CLOUD_ENV, "TRAINHOOK_BUILDER": builder})


@pytest.mark.parametrize(
    ("deploy_extra", "message"),
    [
        ("replicas = 3", "unknown key 'deploy.replicas'"),
        ('namespace = "Prod_NS"', "key 'deploy.namespace'"),
        ('namespace = "prod\\n"', "key 'deploy.namespace'"),
        ("timeout = 5", "key 'deploy.timeout'"),
        ('timeout = "soon"', "key 'deploy.timeout'"),
        ('timeout = "3h"', "key 'deploy.timeout'"),
        ('health_path = "healthz; rm -rf /"', "key 'deploy.health_path'"),
    ],
)
def test_bad_deploy_values_name_the_key(make_settings: Make, deploy_extra: str, message: str):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        make_settings(extra=repo_keys(deploy_extra=deploy_extra), env=CLOUD_ENV)


def test_a_deploy_table_without_its_cluster_is_refused(make_settings: Make):
    extra = f'image = "{IMAGE}"\n[repos.deploy]\nlocation = "europe-west1"\ndeployment = "x"\n'
    with pytest.raises(ConfigError, match=r"missing required key 'deploy\.cluster'"):
        make_settings(extra=extra, env=CLOUD_ENV)


@pytest.mark.parametrize(
    ("vertex", "message"),
    [
        ("parameters = {a = 1}", "missing required key 'vertex.pipeline'"),
        ('pipeline = "../outside.json"', "leaves the repository"),
        ('pipeline = "p.json"\npipeline_root = "/tmp/x"', "key 'vertex.pipeline_root'"),
        ('pipeline = "p.json"\nschedule = "daily"', "unknown key 'vertex.schedule'"),
    ],
)
def test_bad_vertex_tables_name_the_key(make_settings: Make, vertex: str, message: str):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        make_settings(extra=repo_keys(more="[repos.vertex]\n" + vertex + "\n"), env=CLOUD_ENV)


def test_supersede_is_a_boolean(make_settings: Make):
    settings = make_settings(extra="supersede = false\n" + repo_keys(), env=CLOUD_ENV)
    assert settings.repos[0].supersede is False
    with pytest.raises(ConfigError, match="key 'supersede' has the wrong type"):
        make_settings(extra='supersede = "no"\n' + repo_keys(), env=CLOUD_ENV)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TRAINHOOK_SOURCE_BUCKET", "octo-sources"),
        ("TRAINHOOK_SOURCE_BUCKET", "gs://Octo Sources"),
        ("TRAINHOOK_GCP_REGION", "europe"),
        ("TRAINHOOK_CLOUDBUILD_ENDPOINT", "127.0.0.1:9999"),
        ("TRAINHOOK_CLOUDBUILD_TIMEOUT", "10"),
    ],
)
def test_wrong_values_are_start_up_errors_naming_the_variable(
    make_settings: Make, variable: str, value: str
):
    with pytest.raises(ConfigError, match=variable):
        make_settings(extra=repo_keys(), env={**CLOUD_ENV, variable: value})
