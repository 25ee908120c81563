"""The test stage: the repository's own test command, run on the checkout."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import SECRET
from tests.support.gitrepo import GitRepo
from tests.worker.conftest import (
    PIPELINE_STAGES,
    build_view,
    context_for,
    logs,
    new_build,
    run_build,
    stage_map,
)
from worker.checkout import checkout_stage
from worker.stage import StageFailed
from worker.testcommand import repo_tests_stage

FAILING_TEST = """
def test_adds():
    assert 1 + 1 == 2

def test_model_threshold():
    assert 0.5 > 0.9, "macro F1 below threshold"
"""

# Printed, not written to a file: the tests run in a sandbox that sees no path of the host's.
ENV_REPORT = """
import json, os, sys
print("REPORT " + json.dumps({"argv": sys.argv[1:], "env": dict(os.environ)}))
print("env written")
"""


def test_failing_tests_fail_the_build_and_skip_later_stages(
    tmp_path, make_settings, sqlite_url, sqlite_engine
):
    origin = GitRepo(tmp_path / "origin")
    sha = origin.commit({"tests/test_model.py": FAILING_TEST})
    settings = make_settings(
        sqlite_url,
        clone_url=origin.url,
        extra='test_command = "python -m pytest -q -p no:cacheprovider"',
    )

    build_id = run_build(settings, sqlite_engine, sha)

    view = build_view(sqlite_engine, build_id)
    assert view["status"] == "failed"
    test = stage_map(sqlite_engine, build_id)["test"]
    assert test["status"] == "failed"
    assert "exited with 1" in test["detail"] and "1 failed, 1 passed" in test["detail"]
    assert view["error"].startswith("test failed: python -m pytest")
    for name in PIPELINE_STAGES[2:]:
        assert stage_map(sqlite_engine, build_id)[name]["status"] == "skipped"
    assert "macro F1 below threshold" in logs(sqlite_engine, build_id)["test"]


def test_passing_tests_let_the_build_go_on(tmp_path, make_settings, sqlite_url, sqlite_engine):
    origin = GitRepo(tmp_path / "origin")
    sha = origin.commit({"check.py": "print('3 checks passed')\n"})
    settings = make_settings(
        sqlite_url, clone_url=origin.url, extra='test_command = "python check.py"'
    )

    build_id = run_build(settings, sqlite_engine, sha)

    assert build_view(sqlite_engine, build_id)["status"] == "succeeded"
    test = stage_map(sqlite_engine, build_id)["test"]
    assert test["status"] == "succeeded" and "3 checks passed" in test["detail"]


def test_no_test_command_skips_the_test_stage(tmp_path, make_settings, sqlite_url, sqlite_engine):
    origin = GitRepo(tmp_path / "origin")
    settings = make_settings(sqlite_url, clone_url=origin.url)

    build_id = run_build(settings, sqlite_engine, origin.commit({"a": "1"}))

    test = stage_map(sqlite_engine, build_id)["test"]
    assert (test["status"], test["detail"]) == ("skipped", "no test_command configured")
    assert build_view(sqlite_engine, build_id)["status"] == "succeeded"


def test_test_command_runs_without_a_shell_or_trainhook_secrets(
    tmp_path, make_settings, sqlite_url, sqlite_engine, monkeypatch
):
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("TRAINHOOK_DATABASE_URL", "postgresql://u:pw@db/trainhook")
    monkeypatch.setenv("DEPLOY_TOKEN", "t0ken")
    origin = GitRepo(tmp_path / "origin")
    sha = origin.commit({"env_report.py": ENV_REPORT})
    settings = make_settings(
        sqlite_url,
        clone_url=origin.url,
        extra="test_command = \"python env_report.py report '$HOME; touch pwned'\"",
    )
    ctx = context_for(settings, sqlite_engine, new_build(sqlite_engine, sha))
    checkout_stage(ctx)

    outcome = repo_tests_stage(ctx)

    assert "env written" in (outcome.detail or "")
    log = logs(sqlite_engine, ctx.build.id)["test"]
    seen = json.loads(log.split("REPORT ", 1)[1].splitlines()[0])
    assert seen["argv"] == ["report", "$HOME; touch pwned"]  # no shell expansion
    assert not (ctx.need_source() / "pwned").exists()
    env = seen["env"]
    assert not [k for k in env if k.startswith("TRAINHOOK_")]
    assert SECRET not in env.values() and "t0ken" not in env.values()
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)


def test_tests_that_run_too_long_are_killed_and_fail_the_build(
    tmp_path, make_settings, sqlite_url, sqlite_engine
):
    origin = GitRepo(tmp_path / "origin")
    sha = origin.commit({"slow.py": "import time\nprint('starting', flush=True)\ntime.sleep(60)\n"})
    settings = make_settings(
        sqlite_url,
        clone_url=origin.url,
        extra='test_command = "python slow.py"',
        env={"TRAINHOOK_TEST_TIMEOUT": "1"},
    )
    ctx = context_for(settings, sqlite_engine, new_build(sqlite_engine, sha))
    checkout_stage(ctx)

    started = time.monotonic()
    with pytest.raises(StageFailed, match=r"timed out after 1s\nstarting"):
        repo_tests_stage(ctx)
    assert time.monotonic() - started < 10
