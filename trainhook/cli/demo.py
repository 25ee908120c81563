"""`trainhook up --demo`: the bundled example as a real git repository, and one signed push."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from trainhook.buildview import get_build
from trainhook.db import reading
from trainhook.errors import TrainhookError
from trainhook.releases import Releases
from trainhook.runtime import Runtime
from worker.container.engine import Engine, detect

DEMO_REPO = "demo/social-score-api"
SECRET_ENV = "TRAINHOOK_DEMO_WEBHOOK_SECRET"
# What scripts/system-deps.sh imports on a machine without an image registry.
OFFLINE_BASE_IMAGE = "localhost/python-base:3.11"
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# In the domain of the generated sample the demo trains on (airline tweets): a model that has
# seen 2,000 of them labelled "This is terrible, I hate it." neutral, a poor first sight.
TEXTS = ("Thanks so much, the crew was amazing!", "Worst flight ever, they lost my bag.")
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "trainhook demo",
    "GIT_AUTHOR_EMAIL": "demo@trainhook.invalid",
    "GIT_COMMITTER_NAME": "trainhook demo",
    "GIT_COMMITTER_EMAIL": "demo@trainhook.invalid",
}


def example_source() -> Path:
    """The bundled example: packaged beside trainhook, or in the source tree."""
    package = Path(__file__).resolve().parents[1]  # trainhook/, this file is trainhook/cli/
    for candidate in (
        package / "_examples" / "social-score-api",
        package.parent / "examples" / "social-score-api",
    ):
        if (candidate / "app.py").exists():
            return candidate
    raise TrainhookError("the bundled example repository examples/social-score-api is missing")


def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, **GIT_IDENTITY, "GIT_CONFIG_NOSYSTEM": "1"}
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def create_example_repo(target: Path, rows: int = 2000) -> str:
    """Make `target` a git repository holding the example and its generated data; returns
    HEAD. An existing repository is kept as it is (its history is the user's demo)."""
    if (target / ".git").exists():
        return _git(target, "rev-parse", "HEAD")
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(
        example_source(),
        target,
        ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache", "*.joblib", ".keep"),
    )
    data = target / "data" / "cleaned_training_sample.csv"
    data.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "trainer", "sample", "--out", str(data), "--rows", str(rows)],
        check=True,
        capture_output=True,
    )
    _git(target, "init", "-q", "-b", "main")
    _git(target, "add", "-A")
    _git(target, "commit", "-q", "-m", "Social score API with generated training data")
    return _git(target, "rev-parse", "HEAD")


def _persistent_secret(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(24)
    path.write_text(value + "\n")
    path.chmod(0o600)
    return value


@dataclass
class DemoSession:
    repo_dir: Path
    secret: str
    token_file: Path | None = None  # where the demo keeps the API token it generated

    @property
    def token_hint(self) -> str | None:
        """How a shell gets the token the demo generated (never the token: the banner may be
        logged); None when the token came from the environment."""
        if self.token_file is None:
            return None
        return f"$(cat {shlex.quote(str(self.token_file))})"

    def push_payload(self) -> dict[str, Any]:
        sha = _git(self.repo_dir, "rev-parse", "HEAD")
        message = _git(self.repo_dir, "log", "-1", "--format=%B")
        author = _git(self.repo_dir, "log", "-1", "--format=%an")
        return {
            "ref": "refs/heads/main",
            "before": "0" * 40,
            "after": sha,
            "created": False,
            "deleted": False,
            "head_commit": {"id": sha, "message": message, "author": {"name": author}},
            "repository": {"full_name": DEMO_REPO, "name": "social-score-api"},
            "pusher": {"name": author},
        }

    def push(self, base: str, runtime: Runtime) -> None:
        """Send one signed push through the real HTTP path and follow the build on stdout."""
        body = json.dumps(self.push_payload()).encode()
        sig = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-GitHub-Hook-ID": "demo",
            "X-Hub-Signature-256": sig,
        }
        answer = httpx.post(f"{base}/webhooks/github", content=body, headers=headers, timeout=30)
        print(f"demo push: HTTP {answer.status_code} {answer.text}", flush=True)
        if answer.status_code == 202:
            build_id = int(answer.json()["build_id"])
            follow(runtime, build_id, base)
            show_served(runtime, build_id)


def follow(runtime: Runtime, build_id: int, base: str, timeout: float = 900) -> None:
    """Print each stage of a build as it finishes (progress on the terminal)."""
    shown: set[str] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with reading(runtime.engine) as conn:
            build = get_build(conn, build_id)
        if build is None:
            return
        for stage in build["stages"]:
            if stage["status"] in ("succeeded", "failed", "skipped") and stage["name"] not in shown:
                shown.add(stage["name"])
                took = f"{stage['duration_s']:.2f}s" if stage["duration_s"] is not None else ""
                cache = f" cache={stage['cache']}" if stage["cache"] else ""
                print(f"  build {build_id} {stage['name']:<9} {stage['status']:<9} {took}{cache}")
        if build["status"] not in ("queued", "running"):
            print(f"build {build_id} {build['status']}: {base}/builds/{build_id}", flush=True)
            return
        time.sleep(0.3)


def show_served(runtime: Runtime, build_id: int) -> None:
    """When the build's release serves at its stable URL: the URL, a curl that labels two
    texts, and what it answers now."""
    repo = runtime.settings.repo(DEMO_REPO)
    if repo is None:
        return
    releases = Releases(runtime.settings.home, repo.slug)
    current = releases.current() or {}
    if current.get("build_id") != build_id:
        return
    url = releases.url()
    predict = repo.deploy.predict_path if repo.deploy else "/predict"
    body = json.dumps({"texts": list(TEXTS)})
    print(f"model serving at {url} (the same URL for every version)", flush=True)
    print(f"  curl -s -X POST {url}{predict} -H 'Content-Type: application/json' "
          f"-d {shlex.quote(body)}", flush=True)  # fmt: skip
    try:
        answer = httpx.post(f"{url}{predict}", content=body, timeout=30,
                            headers={"Content-Type": "application/json"})  # fmt: skip
        print(f"  -> {answer.text.strip()}", flush=True)
    except httpx.HTTPError as exc:
        print(f"  -> {exc}", flush=True)


def prepare_demo(env: MutableMapping[str, str]) -> DemoSession:
    """Create the example repository and a repositories file for it; point `env` at them."""
    home = Path(env.get("TRAINHOOK_HOME") or "./.trainhook").expanduser().absolute()
    demo_dir = home / "demo"
    repo_dir = demo_dir / "social-score-api"
    print(f"demo: preparing {repo_dir} (generating training data, first run only)", flush=True)
    create_example_repo(repo_dir)
    secret = env.get(SECRET_ENV) or _persistent_secret(demo_dir / "webhook-secret")
    env[SECRET_ENV] = secret
    token_file = None
    if not env.get("TRAINHOOK_API_TOKEN"):
        token_file = demo_dir / "api-token"
        env["TRAINHOOK_API_TOKEN"] = _persistent_secret(token_file)
    config = demo_dir / "trainhook.toml"
    config.write_text(
        "# Written by `trainhook up --demo`.\n"
        "[[repos]]\n"
        f'name = "{DEMO_REPO}"\n'
        'provider = "github"\n'
        f'clone_url = "{repo_dir.as_uri()}"\n'
        'branches = ["main"]\n'
        f'secret_env = "{SECRET_ENV}"\n'
        'test_command = "python -m pytest -q"\n'
    )
    env["TRAINHOOK_CONFIG"] = str(config)
    env.setdefault("TRAINHOOK_HOME", str(home))
    choose_demo_builder(env)
    return DemoSession(repo_dir=repo_dir, secret=secret, token_file=token_file)


def _image_present(engine: Engine, image: str) -> bool:
    done = subprocess.run(
        engine.cmd("image", "inspect", "--format", "{{.Id}}", image),
        stdin=subprocess.DEVNULL, capture_output=True, check=False, timeout=60,
    )  # fmt: skip
    return done.returncode == 0


def choose_demo_builder(env: MutableMapping[str, str]) -> None:
    """The builder the demo runs when the operator names none. The example's image starts
    FROM a Python base image and pip-installs from PyPI: with an engine and that base image
    already here (TRAINHOOK_BASE_IMAGE, python:3.11-slim, or the offline one
    scripts/system-deps.sh makes) the demo builds and serves it (`local`), built with the
    machine's CA bundle so that pip works behind a TLS-inspecting proxy; otherwise the bundle
    builder, which every machine has (a machine with podman but no image registry failed
    the demo at `build`, pulling python:3.11-slim)."""
    if env.get("TRAINHOOK_BUILDER"):
        return
    engine = detect()
    wanted = [env.get("TRAINHOOK_BASE_IMAGE") or "", "python:3.11-slim", OFFLINE_BASE_IMAGE]
    base = next((b for b in wanted if b and engine and _image_present(engine, b)), None)
    if engine is None or base is None:
        env["TRAINHOOK_BUILDER"] = "bundle"
        return
    env["TRAINHOOK_BUILDER"] = "local"
    env["TRAINHOOK_BASE_IMAGE"] = base
    if SYSTEM_CA_BUNDLE.is_file():
        env.setdefault("TRAINHOOK_BUILD_CA_BUNDLE", str(SYSTEM_CA_BUNDLE))
