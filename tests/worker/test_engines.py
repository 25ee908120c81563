"""TRAINHOOK_BUILDER: the engine `local` picks, the `bundle` fallback said plainly, and the
container settings checked at start-up."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from trainhook.configcheck import ConfigError
from trainhook.settings import Settings
from worker.container import engine as engines
from worker.container.builder import ContainerBuilder
from worker.container.engine import NO_ENGINE, Engine, resolve
from worker.local.builder import LocalBuilder
from worker.pipeline import builder_for

Make = Callable[..., Settings]


@pytest.mark.parametrize("name", ["local", "docker", "podman", "bundle"])
def test_every_contract_builder_name_is_accepted(make_settings: Make, name: str):
    assert make_settings(env={"TRAINHOOK_BUILDER": name}).builder == name


def test_an_unknown_builder_is_refused_naming_the_choices(make_settings: Make):
    with pytest.raises(ConfigError, match=r"TRAINHOOK_BUILDER='kaniko'.*'bundle'"):
        make_settings(env={"TRAINHOOK_BUILDER": "kaniko"})


def test_local_without_an_engine_falls_back_to_bundle_and_says_the_model_is_not_served(
    make_settings: Make, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(engines, "detect", lambda: None)
    chosen, note = resolve("local")
    assert chosen == "bundle" and note is not None and note.startswith(NO_ENGINE)

    builder = builder_for(make_settings(env={"TRAINHOOK_BUILDER": "local"}))
    assert isinstance(builder, LocalBuilder) and builder.note == note


def test_local_with_an_engine_builds_images_with_it(
    make_settings: Make, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(engines, "detect", lambda: Engine("podman", ("podman",)))
    builder = builder_for(make_settings(env={"TRAINHOOK_BUILDER": "local"}))
    assert isinstance(builder, ContainerBuilder) and builder.engine.name == "podman"


def test_an_explicit_engine_is_taken_as_asked_without_probing(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(engines, "detect", lambda: pytest.fail("probed"))
    assert resolve("podman") == ("podman", None)
    assert resolve("bundle") == ("bundle", None)


def test_a_docker_cli_without_a_daemon_does_not_count_as_an_engine(tmp_path: Path):
    assert not engines.answers(Engine("docker", (str(tmp_path / "no-such-docker"),)))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TRAINHOOK_REGISTRY": "http://reg.example"}, "TRAINHOOK_REGISTRY='http://reg.example'"),
        ({"TRAINHOOK_BASE_IMAGE": "base; rm -rf /"}, "TRAINHOOK_BASE_IMAGE"),
        ({"TRAINHOOK_BUILD_CA_BUNDLE": "/nonexistent/ca.pem"}, "TRAINHOOK_BUILD_CA_BUNDLE"),
    ],
)
def test_bad_container_settings_are_refused_at_start_up(
    make_settings: Make, env: dict[str, str], message: str
):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        make_settings(env=env)


def test_container_settings_are_read(make_settings: Make, tmp_path: Path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = make_settings(env={
        "TRAINHOOK_REGISTRY": "127.0.0.1:5000/models/", "TRAINHOOK_BASE_IMAGE": "localhost/py:3.11",
        "TRAINHOOK_BUILD_CA_BUNDLE": str(ca),
    })  # fmt: skip
    assert (settings.registry, settings.base_image, settings.build_ca_bundle) == (
        "127.0.0.1:5000/models", "localhost/py:3.11", ca,
    )  # fmt: skip
