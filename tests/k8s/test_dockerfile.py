"""trainhook's own Dockerfile, checked statically (no Docker daemon here): stages, the locked
dependency install, a non-root user, no model files, and a build context that has it all."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str, str]]:
    """(stage, INSTRUCTION, arguments) with continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stage, out = "", []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            match = re.search(r"\bAS\s+(\S+)", rest, re.I)
            stage = match.group(1) if match else rest
        out.append((stage, word.upper(), rest.strip()))
    return out


def in_stage(stage: str, instruction: str) -> list[str]:
    return [args for s, word, args in instructions() if s == stage and word == instruction]


def stages() -> list[str]:
    return [s for s, word, _ in instructions() if word == "FROM"]


def ignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` out of the build context (last match wins)."""
    verdict = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(p, pattern) for p in prefixes):
            verdict = not negate
    return verdict


def test_it_has_a_build_stage_and_a_runtime_stage_fed_from_it():
    build, runtime = stages()
    assert (build, runtime) == ("build", "runtime")
    copies = in_stage("runtime", "COPY")
    from_build = [c for c in copies if c.startswith("--from=build ")]
    assert from_build
    # Besides the venv, only the pinned uv binary (test venvs are built with it).
    others = [c for c in copies if c not in from_build]
    assert all("astral-sh/uv:" in c and not c.split()[0].endswith(":latest") for c in others)


def test_the_runtime_has_uv_for_the_test_venvs():
    assert any("astral-sh/uv:" in c and c.endswith(" /bin/uv") for c in in_stage("runtime", "COPY"))


def test_dependencies_come_from_the_committed_lock_without_dev_tools():
    syncs = [r for r in in_stage("build", "RUN") if "uv sync" in r]
    assert syncs
    for sync in syncs:
        words = sync.split()
        assert "--frozen" in words and "--no-dev" in words, sync
        assert re.search(r"--extra[ =]gcp\b", sync), sync
    assert "pyproject.toml uv.lock ./" in in_stage("build", "COPY")
    uv = [c for c in in_stage("build", "COPY") if "astral-sh/uv" in c]
    assert uv and not uv[0].split()[0].endswith(":latest")


def test_it_runs_as_a_non_root_user():
    (user,) = in_stage("runtime", "USER")
    assert user.split(":")[0] not in ("0", "root")


def test_no_model_or_data_file_enters_the_image():
    for _, word, args in instructions():
        if word in ("COPY", "ADD"):
            assert not re.search(r"joblib|model|\.trainhook|\.csv", args, re.I), args
    for path in ("model.joblib", "worker/model.joblib", "examples/social-score-api/x.joblib"):
        assert ignored(path), path
    for path in (".git/config", ".venv/bin/python", ".trainhook/trainhook.db", "tests/x.py"):
        assert ignored(path), path


def test_every_packaged_directory_is_copied_and_in_the_build_context():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wheel = project["tool"]["hatch"]["build"]["targets"]["wheel"]
    needed = [*wheel["packages"], *wheel.get("force-include", {}), "pyproject.toml", "uv.lock"]
    copied = " ".join(in_stage("build", "COPY"))
    for path in needed:
        assert path in copied, f"{path} is not copied into the build stage"
        assert not ignored(path), f"{path} is excluded by .dockerignore"
    assert not ignored(project["project"]["readme"])


def test_the_default_command_serves_and_the_healthcheck_hits_healthz():
    (cmd,) = in_stage("runtime", "CMD")
    (entrypoint,) = in_stage("runtime", "ENTRYPOINT")
    assert entrypoint == '["trainhook"]' and cmd.startswith('["serve"')
    (healthcheck,) = in_stage("runtime", "HEALTHCHECK")
    (port,) = in_stage("runtime", "EXPOSE")
    assert f"127.0.0.1:{port}/healthz" in healthcheck
    assert f'"--port", "{port}"' in cmd


@pytest.mark.parametrize("needed", ["git"])
def test_the_runtime_has_what_the_worker_runs(needed):
    assert any(needed in run.split() for run in in_stage("runtime", "RUN"))
