"""The command line: summary line, exit statuses, flags, help, and `python -m trainer`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.trainer.conftest import REPO_ROOT, run_python
from trainer.cli import main


def summary_of(capsys: pytest.CaptureFixture[str]) -> tuple[dict, str]:
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 1, out
    return json.loads(lines[0]), err


def test_train_prints_one_json_summary_line_and_exits_0(
    sample_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", str(sample_csv), "--out", str(tmp_path / "out")]) == 0
    summary, err = summary_of(capsys)
    assert summary["data_file"] == str(sample_csv) and summary["fallback_used"] is False
    assert summary["out_dir"] == str(tmp_path / "out") and 0 < summary["macro_f1"] <= 1
    assert summary["rows"]["read"] == 600 and err == ""  # stderr is not a TTY: quiet


def test_data_errors_exit_2_with_the_message_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("tweet,label\nx,y\n", encoding="utf-8")
    assert main(["train", str(bad), "--out", str(tmp_path / "out")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and f"{bad}, line 1: missing column 'text'" in err


def test_unsafe_candidates_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [str(tmp_path), "--out", str(tmp_path / "o"), "--data-candidates", "../x.csv"]
    assert main(["train", *args]) == 2
    assert "'..'" in capsys.readouterr().err


def test_invalid_params_exit_2(
    sample_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [str(sample_csv), "--out", str(tmp_path / "o"), "--params", '{"colour": 1}']
    assert main(["train", *args]) == 2
    assert "unknown training parameter(s): colour" in capsys.readouterr().err


def test_other_failures_exit_1(
    sample_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep-me.txt").write_text("x", encoding="utf-8")
    assert main(["train", str(sample_csv), "--out", str(out)]) == 1
    assert "keep-me.txt" in capsys.readouterr().err


def test_flags_override_params(
    sample_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = tmp_path / "params.json"
    params.write_text('{"C": 0.5, "seed": 9}', encoding="utf-8")
    args = ["--params", f"@{params}", "--seed", "2", "--sample", "300"]
    assert main(["train", str(sample_csv), "--out", str(tmp_path / "o"), *args]) == 0
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["params"]["C"] == 0.5 and metrics["params"]["seed"] == 2
    assert metrics["params"]["sample_rows"] == 300 and metrics["rows"]["used"] == 300


def test_a_directory_is_searched_with_the_given_candidates(
    sample_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "repo" / "in").mkdir(parents=True)
    (tmp_path / "repo" / "in" / "b.csv").write_bytes(sample_csv.read_bytes())
    args = ["--data-candidates", "in/a.csv, in/b.csv", "--out", str(tmp_path / "o")]
    assert main([str(tmp_path / "repo"), *args]) == 0  # no subcommand means train
    assert summary_of(capsys)[0]["data_file"] == str(tmp_path / "repo" / "in" / "b.csv")


def test_the_fallback_is_announced_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "repo").mkdir()
    assert main(["train", str(tmp_path / "repo"), "--out", str(tmp_path / "o")]) == 0
    summary, err = summary_of(capsys)
    assert summary["fallback_used"] is True and "WARNING: FALLBACK" in err


def test_progress_can_be_forced_and_silenced(
    sample_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", str(sample_csv), "--out", str(tmp_path / "a"), "--progress"]) == 0
    err = capsys.readouterr().err
    assert "[trainer]" in err and "reading data" in err and "done: macro-F1" in err
    assert main(["train", str(sample_csv), "--out", str(tmp_path / "b"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["sample", "--help"]])
def test_every_command_has_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 0
    assert "usage: python -m trainer" in capsys.readouterr().out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train"]) == 2
    assert "--out" in capsys.readouterr().err


def test_sample_command_writes_the_requested_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "data" / "cleaned_training_sample.csv"
    assert main(["sample", "--out", str(out), "--rows", "50", "--seed", "4"]) == 0
    assert json.loads(capsys.readouterr().out) == {"path": str(out), "rows": 50, "seed": 4}
    assert len(out.read_text(encoding="utf-8").splitlines()) == 51


def test_python_m_trainer_runs_as_a_process(
    sample_csv: Path, tmp_path: Path, child_env: dict[str, str]
) -> None:
    status, out, err = run_python(
        ["-m", "trainer", "train", str(sample_csv), "--out", str(tmp_path / "o")],
        child_env,
        REPO_ROOT,
    )
    assert status == 0, err
    assert json.loads(out)["out_dir"] == str(tmp_path / "o")
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"text,label\n")
    status, out, err = run_python(
        ["-m", "trainer", "train", str(bad), "--out", str(tmp_path / "x")], child_env, REPO_ROOT
    )
    assert (status, out) == (2, "") and "no usable rows" in err


def test_the_summary_reaches_a_pipe_whole_when_python_buffers_its_output(
    sample_csv: Path, tmp_path: Path, child_env: dict[str, str]
) -> None:
    # A successful run ends without the interpreter's teardown (trainer/__main__.py): what
    # sits in a block-buffered stdout must still be written first.
    env = {k: v for k, v in child_env.items() if k != "PYTHONUNBUFFERED"}

    status, out, err = run_python(
        ["-m", "trainer", "train", str(sample_csv), "--out", str(tmp_path / "o")], env, REPO_ROOT
    )

    assert status == 0, err
    assert json.loads(out)["out_dir"] == str(tmp_path / "o")
    assert (tmp_path / "o" / "model.joblib").is_file()
