"""`trainhook up --demo` (and so `make run`) finds the bundled example wherever it runs from."""

from __future__ import annotations

from pathlib import Path

from trainhook.cli.demo import example_source

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_finds_the_bundled_example_in_the_source_tree():
    assert example_source() == ROOT / "examples" / "social-score-api"
    assert (example_source() / "app.py").is_file()


def test_the_demo_uses_the_bundle_builder_unless_one_is_named(tmp_path):
    from trainhook.cli.demo import prepare_demo

    env = {"TRAINHOOK_HOME": str(tmp_path / "home")}
    prepare_demo(env)
    assert env["TRAINHOOK_BUILDER"] == "bundle"

    named = {"TRAINHOOK_HOME": str(tmp_path / "home2"), "TRAINHOOK_BUILDER": "podman"}
    prepare_demo(named)
    assert named["TRAINHOOK_BUILDER"] == "podman"
