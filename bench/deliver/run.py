"""Delivery figures in one run (a script, not a timed test): webhook → the new version serving
at the repository's stable URL, through a real `trainhook up` process with the container
builder (podman or docker), a real registry and the example's own Dockerfile.

1. first build: a new repository's first push (deps layers built, model trained);
2. data change: the data file replaced by the airline tweets (../shared/data, when present;
   else 2,000 more generated rows): a model miss, a new image, a switch;
3. code-only: app.py changed: a model hit, the image rebuilt on cached dependency layers;
4. README-only: a model hit, every image layer cached;
5. image build, cold (`--no-cache`: the base image's pip install from PyPI) against warm (a
   code change on a cached dependency layer), the example's context, the same engine.

"Serving" is measured, not inferred: the time runs from sending the signed webhook until
`current.json` names the new build and a POST to the stable URL labels two texts.

    uv run python bench/deliver/run.py [--base-image localhost/python-base:3.11] [--reps 1]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from trainhook.cli.demo import create_example_repo  # noqa: E402
from trainhook.releases import Releases  # noqa: E402
from worker.container.engine import detect  # noqa: E402

AIRLINE = ROOT.parent / "shared" / "data" / "twitter_us_airline_sentiment.csv"
REPO = "bench/social-score-api"
SLUG = "github-bench--social-score-api"
SECRET = "bench-webhook-secret-0123456789"
DATA = "data/cleaned_training_sample.csv"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def push(base: str, repo_dir: Path) -> int:
    sha = git(repo_dir, "rev-parse", "HEAD")
    body = json.dumps({
        "ref": "refs/heads/main", "before": "0" * 40, "after": sha, "created": False,
        "deleted": False, "head_commit": {"id": sha, "message": "bench", "author": {"name": "b"}},
        "repository": {"full_name": REPO, "name": "social-score-api"},
        "pusher": {"name": "bench"},
    }).encode()  # fmt: skip
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(
        f"{base}/webhooks/github", body, {
            "Content-Type": "application/json", "X-GitHub-Event": "push",
            "X-GitHub-Delivery": str(uuid.uuid4()), "X-GitHub-Hook-ID": "bench",
            "X-Hub-Signature-256": signature,
        },
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
    if answer.get("status") != "queued":
        raise SystemExit(f"the push was not queued: {answer}")
    return int(answer["build_id"])


def serving(releases: Releases, build_id: int) -> bool:
    if (releases.current() or {}).get("build_id") != build_id:
        return False
    body = json.dumps({"texts": ["I love this", "This is awful"]}).encode()
    request = urllib.request.Request(
        releases.url() + "/predict", body, {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return len(json.loads(response.read()).get("labels", [])) == 2
    except OSError:
        return False


def build_json(base: str, build_id: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base}/api/builds/{build_id}", timeout=10) as response:
        return dict(json.loads(response.read()))


def deliver(base: str, repo_dir: Path, releases: Releases, timeout: float) -> dict[str, Any]:
    """Push HEAD, wait until the new build serves; seconds and each stage's duration."""
    start = time.monotonic()
    build_id = push(base, repo_dir)
    deadline = start + timeout
    while not serving(releases, build_id):
        build = build_json(base, build_id)
        if build["status"] not in ("queued", "running") or time.monotonic() > deadline:
            stages = {s["name"]: (s["status"], s["detail"]) for s in build["stages"]}
            raise SystemExit(f"build {build_id} {build['status']} and not serving: {stages}")
        time.sleep(0.2)
    seconds = time.monotonic() - start
    build = build_json(base, build_id)
    while build["status"] in ("queued", "running"):  # the deploy stage ends after the switch
        time.sleep(0.2)
        build = build_json(base, build_id)
    stages = {s["name"]: s["duration_s"] for s in build["stages"] if s["duration_s"] is not None}
    return {"build_id": build_id, "seconds": seconds, "stages": stages}


def change(repo_dir: Path, kind: str, n: int) -> str:
    """Commit one change of `kind`; returns what it was."""
    if kind == "data":
        target = repo_dir / DATA
        if AIRLINE.is_file():
            shutil.copyfile(AIRLINE, target)
            what = f"data replaced by the airline tweets ({AIRLINE.name})"
        else:
            rows = target.read_text().splitlines()
            target.write_text("\n".join(rows + rows[1:2001]) + "\n")
            what = "data: 2,000 generated rows appended"
    elif kind == "code":
        with (repo_dir / "app.py").open("a") as stream:
            stream.write(f"\n# bench code change {n}\n")
        what = "app.py changed"
    else:
        with (repo_dir / "README.md").open("a") as stream:
            stream.write(f"\nbench README change {n}\n")
        what = "README.md changed"
    git(repo_dir, "commit", "-qam", f"bench: {what}")
    return what


def image_builds(engine_argv: list[str], repo_dir: Path, base_image: str) -> dict[str, float]:
    """Seconds for a cold build (no layer cache) and a warm one (code change only)."""
    context = Path(tempfile.mkdtemp(prefix="bench-image-"))
    tag = f"localhost/trainhook-bench/image:{uuid.uuid4().hex[:8]}"
    try:
        shutil.copytree(
            repo_dir, context, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".git")
        )
        args = [*engine_argv, "build", "-q", "-t", tag, "--build-arg", f"BASE_IMAGE={base_image}"]
        if engine_argv[0] == "podman":
            args += ["--isolation", "oci"]
            if CA_BUNDLE.is_file():
                args += ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"]
        out = {}
        for name, extra in (("cold", ["--no-cache"]), ("warm", [])):
            if name == "warm":
                with (context / "app.py").open("a") as stream:
                    stream.write("\n# warm build change\n")
            start = time.monotonic()
            subprocess.run([*args, *extra, str(context)], check=True, capture_output=True)
            out[name] = time.monotonic() - start
        return out
    finally:
        subprocess.run([*engine_argv, "rmi", "-f", tag], capture_output=True, check=False)
        shutil.rmtree(context, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-image", default=os.environ.get("TRAINHOOK_BASE_IMAGE", ""))
    parser.add_argument("--reps", type=int, default=1, help="pushes per change kind [1]")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--keep", action="store_true", help="keep the home (to look around)")
    args = parser.parse_args()
    engine = detect()
    if engine is None:
        raise SystemExit("no container engine: the delivery figures need docker or podman")

    home = Path(tempfile.mkdtemp(prefix="bench-deliver-"))
    repo_dir = home / "repo"
    create_example_repo(repo_dir)
    config = home / "trainhook.toml"
    config.write_text(
        f'[[repos]]\nname = "{REPO}"\nprovider = "github"\nclone_url = "{repo_dir.as_uri()}"\n'
        'secret_env = "BENCH_SECRET"\ntest_command = "python -m pytest -q"\n'
    )
    port = free_port()
    env = {
        **os.environ, "TRAINHOOK_HOME": str(home / "home"), "TRAINHOOK_CONFIG": str(config),
        "BENCH_SECRET": SECRET, "TRAINHOOK_BUILDER": engine.name,
    }  # fmt: skip
    if args.base_image:
        env["TRAINHOOK_BASE_IMAGE"] = args.base_image
    if CA_BUNDLE.is_file():
        env.setdefault("TRAINHOOK_BUILD_CA_BUNDLE", str(CA_BUNDLE))
    log = (home / "up.log").open("w")
    up = subprocess.Popen(
        [sys.executable, "-m", "trainhook.cli", "up", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    releases = Releases(home / "home", SLUG)
    results: dict[str, list[dict[str, Any]]] = {}
    what: dict[str, str] = {}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/readyz", timeout=2).close()
                break
            except OSError:
                if up.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"`trainhook up` did not start; see {home}/up.log") from None
                time.sleep(0.3)
        what["first"] = "a new repository's first push"
        results["first"] = [deliver(base, repo_dir, releases, args.timeout)]
        for kind in ("data", "code", "readme"):
            for n in range(args.reps):
                what[kind] = change(repo_dir, kind, n)
                results.setdefault(kind, []).append(deliver(base, repo_dir, releases, args.timeout))
        builds = image_builds(list(engine.argv), repo_dir, args.base_image or "python:3.11-slim")
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
        log.close()
        current = releases.current() or {}
        if current.get("container"):
            subprocess.run(engine.cmd("rm", "-f", current["container"]), capture_output=True)
        images = subprocess.run(
            engine.cmd("images", "-q", "--filter", f"reference=*{SLUG}*"),
            capture_output=True, text=True, check=False,
        ).stdout.split()  # fmt: skip
        if images:
            subprocess.run(engine.cmd("rmi", "-f", *images), capture_output=True, check=False)
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)

    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor(),
    )  # fmt: skip
    print(f"\nMachine: {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}; "
          f"engine {engine.name}; date {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n")  # fmt: skip
    goals = {"readme": "≤ 20 s", "code": "≤ 30 s", "data": "≤ 60 s", "first": "–"}
    stages = "test | train | build | push | deploy"
    print(f"| push | change | webhook → serving (median) | {stages} | goal |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for kind in ("first", "data", "code", "readme"):
        runs = results[kind]
        seconds = statistics.median(r["seconds"] for r in runs)
        stage = {
            name: statistics.median(r["stages"].get(name, 0.0) for r in runs)
            for name in ("test", "train", "build", "push", "deploy")
        }
        cells = " | ".join(f"{stage[n]:.1f} s" for n in stage)
        print(f"| {kind} | {what[kind]} | **{seconds:.1f} s** | {cells} | {goals[kind]} |")
    ratio = builds["cold"] / builds["warm"]
    print(f"\nImage build of the example: cold {builds['cold']:.1f} s, warm (code change) "
          f"{builds['warm']:.1f} s: **{ratio:.1f}×**")  # fmt: skip


if __name__ == "__main__":
    main()
