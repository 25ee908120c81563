"""Running a pushed image as a repository's release: pull by digest, run, health + smoke test,
switch the stable URL, stop the old container. Shared by the deploy stage and
`trainhook rollback`, so a rollback passes the same checks a deploy does; and `adopt`, which
`trainhook up` runs at start to keep what serves and remove what a killed worker left."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainhook.deployconfig import DeployConfig
from trainhook.models import utcnow
from trainhook.releases import LOOPBACK, Releases, home_label
from worker.container.engine import Engine
from worker.container.registry import is_loopback
from worker.stage import StageFailed

LOG_LINES = 20
PULL_TIMEOUT = 600.0
STOP_GRACE = 5  # seconds an old container gets to finish its requests after the switch
REPO_LABEL = "trainhook.repo"
VERSION_LABEL = "trainhook.version"
BUILD_LABEL = "trainhook.build"
HOME_LABEL = "trainhook.home"
OWNER_LABEL = "trainhook.owner"
# Podman's default rlimits can exceed a host's hard limits, and then nothing starts.
PODMAN_RUN = ("--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096")

Log = Callable[[str], None]


class Containers:
    """The engine commands a release needs, each with a time limit."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def stream(self, args: list[str], on_line: Log, timeout: float) -> tuple[int, str]:
        """Run the engine, each output line to `on_line`; (exit code, last lines)."""
        tail: deque[str] = deque(maxlen=LOG_LINES)
        deadline = time.monotonic() + timeout
        with subprocess.Popen(
            self.engine.cmd(*args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, errors="replace",
        ) as process:  # fmt: skip
            assert process.stdout is not None
            for line in process.stdout:
                tail.append(line)
                on_line(line)
                if time.monotonic() > deadline:
                    process.kill()
                    tail.append(f"timed out after {timeout:.0f} s\n")
                    break
            code = process.wait()
        return code, "".join(tail)

    def output(self, args: list[str], env: Mapping[str, str] | None = None) -> str:
        result = subprocess.run(
            self.engine.cmd(*args), stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=120, check=False, env=None if env is None else dict(env),
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {result.stderr.strip()[-500:]}")
        return result.stdout.strip()

    def running(self, container: Any) -> bool:
        if not isinstance(container, str) or not container:
            return False
        try:
            state = self.output(["inspect", "--format", "{{.State.Running}}", container])
        except RuntimeError:
            return False
        return state == "true"

    def logs(self, container: str) -> str:
        result = subprocess.run(
            self.engine.cmd("logs", "--tail", str(LOG_LINES), container),
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        return (result.stdout + result.stderr).strip() or "(no output)"

    def remove(self, container: str, grace: int = 0) -> None:
        """Stop (SIGTERM, then SIGKILL after `grace` seconds) and remove. Podman's `rm -f`
        alone waits 10 s for a container whose pid 1 ignores SIGTERM (any Python app run as
        pid 1 without a handler): measured 10.2 s per removal before `--time`."""
        if grace:
            self._quiet("stop", "--time", str(grace), container)
        wait = ("--time", "0") if self.engine.name == "podman" else ()
        self._quiet("rm", "-f", *wait, container)

    def host_port(self, container: str, port: int) -> int:
        """The loopback port the engine published the container's `port` on."""
        out = self.output(["port", container, f"{port}/tcp"])
        for line in out.splitlines():
            host, _, number = line.strip().rpartition(":")
            if host in (LOOPBACK, "0.0.0.0") and number.isdigit():
                return int(number)
        raise RuntimeError(f"container {container[:12]} publishes no port for {port}: {out!r}")

    def labelled(self, home: Path) -> list[dict[str, str]]:
        """Every container (running or not) this home started: id, repo, owner, running."""
        ids = self.output(
            ["ps", "-aq", "--no-trunc", "--filter", f"label={HOME_LABEL}={home_label(home)}"]
        )
        if not ids:
            return []
        fields = f'{{{{.Id}}}} {{{{index .Config.Labels "{REPO_LABEL}"}}}} ' + (
            f'{{{{index .Config.Labels "{OWNER_LABEL}"}}}} {{{{.State.Running}}}}'
        )
        found = []
        for line in self.output(["inspect", "--format", fields, *ids.split()]).splitlines():
            parts = line.split()
            if len(parts) == 4:
                found.append(dict(zip(("id", "repo", "owner", "running"), parts, strict=True)))
        return found

    def _quiet(self, *args: str) -> None:
        subprocess.run(
            self.engine.cmd(*args), stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
            check=False,
        )  # fmt: skip


def process_owner(pid: int | None = None) -> str:
    """`<pid>:<start time>` of a process (this one by default): with the start time a reused
    pid is not taken for the process that started a container."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{_start_time(pid)}"


def owner_alive(owner: str) -> bool:
    pid, _, started = owner.partition(":")
    if not pid.isdigit():
        return False
    return _start_time(int(pid)) == started and started != ""


def _start_time(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # Field 22 (start time in clock ticks), counted after the parenthesised command name.
    return stat.rpartition(")")[2].split()[19]


@dataclass(frozen=True)
class Target:
    """A release to run: its pushed record, the repository's deploy keys, what to label."""

    record: dict[str, Any]
    deploy: DeployConfig
    texts: tuple[str, ...]


def deliver(
    containers: Containers,
    releases: Releases,
    target: Target,
    log: Log,
    environ: Mapping[str, str],
    before_switch: Callable[[], str | None] | None = None,
) -> tuple[bool, str]:
    """Run `target`'s image, check it, make it current and stop the old container; returns
    whether it serves now (switched, or found serving already) and what happened. Raises
    StageFailed (the current release left serving) when the pull, the start, the health
    check or the smoke test fails. `before_switch` may veto the switch
    (its reason is returned, the new container removed): the deploy's stale-push check."""
    record = target.record
    with releases.locked():
        current = releases.current() or {}
        url = releases.url()
        if current.get("digest") == record["digest"] and containers.running(
            current.get("container")
        ):
            return True, f"{record['version']} already serving at {url}"
        was = current.get("version") or "none"
        pull(containers, record["image"], log)
        container = start(containers, releases, target, environ)
        port = 0
        try:
            port = containers.host_port(container, target.deploy.port)
            problem = check(containers, container, port, target, log)
        except RuntimeError as exc:
            # An app that exits at once can be gone before its port is read: that is the
            # same failure as exiting during the health wait, and is said the same way.
            if containers.running(container):
                problem = f"the new container did not start: {exc}"
            else:
                problem = "health check failed: the new container exited before it was healthy"
        if problem is not None:
            logs = containers.logs(container)
            containers.remove(container)
            raise StageFailed(
                f"{problem}; current release unchanged ({was}); "
                f"the new container's last lines:\n{logs}"
            )
        veto = before_switch() if before_switch is not None else None
        if veto:
            containers.remove(container)
            return False, f"{veto}; current release unchanged ({was})"
        served = {**record, "served_at": record.get("served_at") or utcnow().isoformat()}
        releases.save(record["version"], served)
        releases.switch({
            **served, "container": container, "port": port, "url": url,
            "container_port": target.deploy.port,
        })  # fmt: skip
        old = current.get("container")
        if isinstance(old, str) and old and old != container:
            containers.remove(old, grace=STOP_GRACE)
    return True, (
        f"{record['image']} serving at {url} in container {container[:12]} (was {was}); "
        f"health {target.deploy.health_path} and smoke test {target.deploy.predict_path} passed"
    )


def pull(containers: Containers, image: str, log: Log) -> None:
    """Make `image` (by digest) present; a digest already pulled or built here is used as it
    is, so a rollback works while the registry is down."""
    try:
        containers.output(["image", "inspect", "--format", "{{.Id}}", image])
        return
    except RuntimeError:
        pass
    registry = image.split("/", 1)[0]
    tls = (
        ["--tls-verify=false"]
        if is_loopback(registry) and containers.engine.name == "podman"
        else []
    )
    code, tail = containers.stream(["pull", *tls, image], log, PULL_TIMEOUT)
    if code != 0:
        raise StageFailed(f"pulling {image} failed; current release unchanged:\n{tail}")


def start(
    containers: Containers, releases: Releases, target: Target, environ: Mapping[str, str]
) -> str:
    """Start the image detached, its port published on an engine-chosen loopback port (so
    two versions listen on the same in-container port during a switch), labelled so that
    `adopt` finds it; returns the container id. Only the names in `deploy.env` are passed,
    by name (`-e NAME`), so their values never appear on a command line."""
    deploy, record = target.deploy, target.record
    name = f"trainhook-{releases.slug}-{record['version']}-{secrets.token_hex(3)}"
    args = ["run", "-d", "--name", name[:200], "-p", f"{LOOPBACK}::{deploy.port}"]
    args += ["-e", f"PORT={deploy.port}"]
    if containers.engine.name == "podman":
        args += list(PODMAN_RUN)
    if deploy.memory is not None:
        args += ["--memory", str(deploy.memory)]
    if deploy.cpus is not None:
        args += ["--cpus", f"{deploy.cpus:g}"]
    passed = {name: environ[name] for name in deploy.env if name in environ}
    for name in passed:
        args += ["-e", name]
    labels = {
        REPO_LABEL: releases.slug,
        VERSION_LABEL: str(record["version"]),
        BUILD_LABEL: str(record.get("build_id", "")),
        HOME_LABEL: home_label(releases.home),
        OWNER_LABEL: process_owner(),
    }
    for key, value in labels.items():
        args += ["--label", f"{key}={value}"]
    # The engine reads the listed values from its own environment: only those, and PATH and
    # the like the engine itself needs, never the worker's secrets.
    env = {k: v for k, v in os.environ.items() if k not in deploy.env} | passed
    try:
        return containers.output([*args, record["image"]], env=env)
    except RuntimeError as exc:
        # `run` can fail after creating the container (an app that exits while its port is
        # being published): it is removed by the name given, so nothing is left behind.
        containers.remove(name[:200])
        raise StageFailed(
            f"the new container did not start: {exc}; current release unchanged"
        ) from None


def check(
    containers: Containers, container: str, port: int, target: Target, log: Log
) -> str | None:
    """None when the container answers its health path and labels the smoke texts, else
    what went wrong."""
    deploy = target.deploy
    url = f"http://{LOOPBACK}:{port}"
    deadline = time.monotonic() + deploy.timeout
    while True:
        if not containers.running(container):
            return "health check failed: the new container exited before it was healthy"
        try:
            with urllib.request.urlopen(url + deploy.health_path, timeout=5) as response:
                if response.status == 200:
                    break
        except (OSError, urllib.error.HTTPError):
            pass
        if time.monotonic() > deadline:
            return f"health check {deploy.health_path} failed for {deploy.timeout} s"
        time.sleep(0.5)
    body = json.dumps({"texts": list(target.texts)}).encode()
    request = urllib.request.Request(
        url + deploy.predict_path, data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            labels = json.loads(response.read()).get("labels")
    except (OSError, ValueError, AttributeError) as exc:
        return f"smoke test POST {deploy.predict_path} failed: {exc}"
    if not isinstance(labels, list) or len(labels) != len(target.texts):
        return f"smoke test POST {deploy.predict_path} gave no labels for {len(target.texts)} texts"
    log(f"smoke test labels: {', '.join(map(str, labels))}\n")
    return None


def adopt(containers: Containers, home: Path, slugs: Iterable[str]) -> list[str]:
    """After a restart: keep each repository's current container serving (started again if
    it stopped, its new port recorded), and remove every other container this home started
    whose starting process is gone (a deploy a killed worker left half done). Containers of
    a living process (another worker mid-deploy) are left to it. Returns what it did."""
    said: list[str] = []
    found = containers.labelled(home)
    every = {*slugs, *(c["repo"] for c in found)}
    currents = {slug: Releases(home, slug).current() or {} for slug in every}
    for item in found:
        current = currents.get(item["repo"], {})
        if item["id"] == current.get("container"):
            if item["running"] != "true":
                said.append(_restart(containers, Releases(home, item["repo"]), current))
            else:
                said.append(
                    f"{item['repo']}: {current.get('version')} serving at {current.get('url')}"
                )
        elif not owner_alive(item["owner"]):
            containers.remove(item["id"])
            said.append(f"{item['repo']}: removed container {item['id'][:12]} (not current)")
    return said


def _restart(containers: Containers, releases: Releases, current: dict[str, Any]) -> str:
    container = current["container"]
    try:
        containers.output(["start", container])
        deploy_port = int(current.get("container_port") or 0) or None
        port = containers.host_port(container, deploy_port or 8080)
    except RuntimeError as exc:
        return f"{releases.slug}: current container {container[:12]} does not start: {exc}"
    with releases.locked():
        releases.switch({**current, "port": port})
    return f"{releases.slug}: restarted {current.get('version')} at {current.get('url')}"


def revive(
    containers: Containers,
    releases: Releases,
    deploy: DeployConfig,
    texts: tuple[str, ...],
    environ: Mapping[str, str],
    log: Log,
) -> str | None:
    """After `adopt`: when the current release's container is gone (removed by hand, the
    engine's storage reset) or did not start again, run the current release's image anew,
    with the deploy's checks, so the stable URL serves what it served before the restart.
    Returns what happened, or None when nothing was needed."""
    current = releases.current()
    if not current or not current.get("image") or containers.running(current.get("container")):
        return None
    record = releases.record(str(current.get("version"))) or current
    try:
        _, detail = deliver(containers, releases, Target(record, deploy, texts), log, environ)
    except (StageFailed, RuntimeError) as exc:
        return f"{releases.slug}: the current release {current.get('version')} does not run: {exc}"
    return f"{releases.slug}: ran the current release again: {detail}"
