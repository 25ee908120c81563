"""Command-line options: --version, the trainer's own help, -v after the command."""

from __future__ import annotations

import pytest

from trainhook.cli import _parser, main


def test_version_names_the_package(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("trainhook ")


@pytest.mark.parametrize("argv", [["train", "--help"], ["-v", "train", "train", "--help"]])
def test_train_help_shows_the_trainers_options(argv, capsys: pytest.CaptureFixture[str]):
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "--out DIR" in out and "--text-column" in out
    # Named as it was run, so the usage line can be copied back.
    assert out.startswith("usage: trainhook train ") and "python -m trainer" not in out


def test_the_trainer_run_alone_keeps_its_own_name(capsys: pytest.CaptureFixture[str]):
    from trainer.cli import main as trainer_main

    assert trainer_main(["train", "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: python -m trainer train ")


@pytest.mark.parametrize(
    ("argv", "verbose"),
    [(["worker", "-v"], True), (["-v", "worker"], True), (["worker"], False)],
)
def test_verbose_is_accepted_before_or_after_the_command(argv, verbose):
    assert _parser().parse_args(argv).verbose is verbose


def test_watch_needs_a_build_number():
    with pytest.raises(SystemExit) as done:
        _parser().parse_args(["watch"])
    assert done.value.code == 2
