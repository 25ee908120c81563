"""`trainhook up --demo` (and so `make run`) finds the bundled example wherever it runs from."""

from __future__ import annotations

from pathlib import Path

from trainhook.cli.demo import example_source

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_finds_the_bundled_example_in_the_source_tree():
    assert example_source() == ROOT / "examples" / "social-score-api"
    assert (example_source() / "app.py").is_file()


def test_the_demo_uses_the_bundle_builder_without_an_engine_unless_one_is_named(
    tmp_path, monkeypatch
):
    from trainhook.cli import demo
    from trainhook.cli.demo import prepare_demo

    monkeypatch.setattr(demo, "detect", lambda: None)
    env = {"TRAINHOOK_HOME": str(tmp_path / "home")}
    prepare_demo(env)
    assert env["TRAINHOOK_BUILDER"] == "bundle"

    named = {"TRAINHOOK_HOME": str(tmp_path / "home2"), "TRAINHOOK_BUILDER": "podman"}
    prepare_demo(named)
    assert named["TRAINHOOK_BUILDER"] == "podman"


def test_the_demo_builds_and_serves_the_image_when_an_engine_and_its_base_image_are_here(
    monkeypatch,
):
    from trainhook.cli import demo
    from worker.container.engine import Engine

    monkeypatch.setattr(demo, "detect", lambda: Engine("podman", ("podman",)))
    monkeypatch.setattr(demo, "_image_present", lambda _, image: image == demo.OFFLINE_BASE_IMAGE)
    env: dict[str, str] = {}
    demo.choose_demo_builder(env)
    assert env["TRAINHOOK_BUILDER"] == "local"
    assert env["TRAINHOOK_BASE_IMAGE"] == demo.OFFLINE_BASE_IMAGE

    monkeypatch.setattr(demo, "_image_present", lambda _, image: False)  # no base image here
    env = {}
    demo.choose_demo_builder(env)
    assert env == {"TRAINHOOK_BUILDER": "bundle"}


def test_the_demos_example_request_gets_the_labels_its_words_say(tmp_path: Path):
    """`make run` ends with a curl that labels two texts: a reader checks the answer against
    the words, so the demo's own model (trained on the demo's generated data) must agree."""
    from trainer import train
    from trainhook.cli.demo import TEXTS, create_example_repo
    from trainhook_runtime import load_model

    create_example_repo(tmp_path / "repo")
    train(tmp_path / "repo" / "data" / "cleaned_training_sample.csv", tmp_path / "model")
    assert list(load_model(tmp_path / "model").predict(list(TEXTS))) == ["positive", "negative"]
