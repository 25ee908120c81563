"""Real delivery on one machine: images in a real registry process, run by podman, reached at
the repository's stable URL through the forwarder; a switch, a failed one, a crash, the
registry down, a worker killed mid-deploy, re-adopting after a restart, rollback and the
releases listing. The switch and the crash run over docker too (a daemon the session starts),
its images pulled from the registry by digest.

The images are built once per module from a stdlib app (the offline base image has no pip
packages) that differs only in its last layer: what it labels, and how it misbehaves."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.support.containers import BASE_IMAGE, need_engine, need_podman, remove_containers
from trainhook import db
from trainhook.cli import main
from trainhook.deployconfig import DeployConfig
from trainhook.models import audit_events
from trainhook.releases import Releases, home_label
from worker.container.engine import Engine
from worker.container.forward import Forwarder
from worker.container.registry import start_local_registry, stop_registry
from worker.container.release import (
    HOME_LABEL,
    Containers,
    Target,
    adopt,
    deliver,
    revive,
)
from worker.stage import StageFailed

TEXTS = ("good", "bad")
# MODE: ok | crash (exits at start, saying why) | unhealthy (/healthz 500) | hang (never healthy)
APP = """\
import json, os, signal, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LABEL = open("label.txt").read().strip()
MODE = open("mode.txt").read().strip()
if MODE == "crash":
    sys.exit("cannot load the model: model.joblib is truncated")
# pid 1 ignores SIGTERM without a handler; a served app stops on it.
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


class Handler(BaseHTTPRequestHandler):
    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        healthy = self.path == "/healthz" and MODE == "ok"
        self.answer(200 if healthy else 500, {"label": LABEL, "env": os.environ.get("APP_KEY")})

    def do_POST(self):
        texts = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["texts"]
        self.answer(200, {"labels": [LABEL for _ in texts]})


ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""
DOCKERFILE = f"""\
FROM {BASE_IMAGE}
WORKDIR /app
COPY app.py ./
COPY label.txt mode.txt ./
CMD ["python3", "app.py"]
"""
IMAGES = {  # version -> (label, mode)
    "b1-aaaaaaaaaaaa": ("pos", "ok"),
    "b2-bbbbbbbbbbbb": ("neg", "ok"),
    "b3-cccccccccccc": ("neg", "unhealthy"),
    "b4-dddddddddddd": ("neg", "crash"),
    "b5-eeeeeeeeeeee": ("neg", "hang"),
}
# The tests that also run over docker (parametrised with ENGINES) deliver only these.
DOCKER_IMAGES = ("b1-aaaaaaaaaaaa", "b2-bbbbbbbbbbbb", "b4-dddddddddddd")
ENGINES = ["podman", "docker"]


@dataclass
class Registry:
    address: str
    records: dict[str, dict[str, Any]]  # version -> pushed record


@contextlib.contextmanager
def registry_holding(
    engine: Engine, versions: Iterable[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    """A registry process holding one image per version (IMAGES), each built once by
    `engine`. Docker's local copies are removed after the push, so a delivery pulls them."""
    home = tmp_path_factory.mktemp("registry-home")
    process = start_local_registry(home)
    assert process is not None
    address = (home / "oci-registry" / "address").read_text().strip()
    name = f"trainhook-delivery-test-{secrets.token_hex(3)}"
    context = tmp_path_factory.mktemp("image")
    (context / "app.py").write_text(APP)
    (context / "Dockerfile").write_text(DOCKERFILE)
    records = {}
    tags = []
    try:
        for build_id, (version, (label, mode)) in enumerate(IMAGES.items(), start=1):
            if version not in versions:
                continue
            (context / "label.txt").write_text(label)
            (context / "mode.txt").write_text(mode)
            tag = f"localhost/{name}:{version}"
            tags.append(tag)
            ref = f"{address}/{name}:{version}"
            if engine.name == "podman":
                run(engine, "build", "--isolation", "chroot", "-q", "-t", tag, str(context))
                digestfile = context / "digest"
                run(engine, "push", "--tls-verify=false", "--digestfile", str(digestfile), tag, ref)
                digest = digestfile.read_text().strip()
            else:
                run(engine, "build", "-q", "-t", tag, str(context))
                run(engine, "tag", tag, ref)
                # The push says `TAG: digest: sha256:… size: N` as its last line.
                said = run(engine, "push", ref).split("digest: ", 1)[1]
                digest = said.split()[0]
                run(engine, "rmi", tag, ref)
            records[version] = {
                "version": version, "build_id": build_id, "sha": version[3:] * 3,
                "digest": digest, "image": f"{address}/{name}@{digest}",
                "created": f"2026-01-0{build_id}T00:00:00+00:00",
            }  # fmt: skip
        yield Registry(address, records)
    finally:
        stop_registry(process)
        images = subprocess.run(
            engine.cmd("images", "-q", "--filter", f"reference=*{name}*"),
            capture_output=True, text=True, check=False,
        ).stdout.split()  # fmt: skip
        subprocess.run(engine.cmd("rmi", "-f", *tags, *images), capture_output=True, check=False)


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """The registry holding every IMAGES entry, built by podman."""
    with registry_holding(need_podman(), IMAGES, tmp_path_factory) as registry:
        yield registry


@pytest.fixture(scope="module")
def docker_pushed(
    docker_daemon: Engine | str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    """A registry holding what the docker variants deliver, built by the session's docker."""
    engine = need_engine("docker", docker_daemon)
    with registry_holding(engine, DOCKER_IMAGES, tmp_path_factory) as registry:
        yield registry


def run(engine: Engine, *args: str) -> str:
    done = subprocess.run(engine.cmd(*args), capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{args[:2]}: {done.stderr[-800:]}"
    return done.stdout.strip()


@dataclass
class Machine:
    """One trainhook home on this machine: its release records, URL forwarder, engine."""

    engine: Engine
    home: Path
    slug: str
    releases: Releases
    forwarder: Forwarder
    registry: Registry
    deploy: DeployConfig

    def deliver(self, version: str, **kwargs: Any) -> tuple[bool, str]:
        target = Target(self.registry.records[version], self.deploy, TEXTS)
        lines: list[str] = []
        return deliver(
            Containers(self.engine), self.releases, target, lines.append, os.environ, **kwargs
        )

    def labels(self) -> list[str]:
        """What the stable URL answers now."""
        return predict(self.releases.url())

    def containers(self) -> list[str]:
        out = run(
            self.engine,
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            f"label={HOME_LABEL}={home_label(self.home)}",
        )
        return out.split()


def predict(url: str) -> list[str]:
    request = urllib.request.Request(
        url + "/predict", json.dumps({"texts": list(TEXTS)}).encode(),
        {"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        return list(json.loads(response.read())["labels"])


@pytest.fixture
def engine_name() -> str:
    """podman; a test parametrised with `engine_name` over ENGINES runs over docker too."""
    return "podman"


@pytest.fixture
def machine(request: pytest.FixtureRequest, engine_name: str, tmp_path: Path) -> Iterator[Machine]:
    if engine_name == "podman":
        engine, pushed = need_podman(), request.getfixturevalue("pushed")
    else:
        engine = need_engine(engine_name, request.getfixturevalue("docker_daemon"))
        pushed = request.getfixturevalue("docker_pushed")
    home = tmp_path / "home"
    slug = f"github-octo-org--app-{secrets.token_hex(3)}"
    releases = Releases(home, slug)
    forwarder = Forwarder([releases])
    assert forwarder.start() == {slug: releases.stable_port()}
    deploy = DeployConfig(timeout=30, env=("APP_KEY",))
    yield Machine(engine, home, slug, releases, forwarder, pushed, deploy)
    forwarder.close()
    remove_containers(engine, f"{HOME_LABEL}={home_label(home)}")


@pytest.mark.parametrize("engine_name", ENGINES)
def test_a_new_model_serves_at_the_same_url_within_its_limits_and_the_old_container_is_gone(
    machine: Machine,
):
    limited = replace(machine.deploy, memory=256 * 2**20, cpus=1.5)
    machine = Machine(**{**machine.__dict__, "deploy": limited})
    assert machine.deliver("b1-aaaaaaaaaaaa")[0]
    url = machine.releases.url()
    assert machine.labels() == ["pos", "pos"]
    (first,) = machine.containers()
    given = run(machine.engine, "inspect", "--format", "{{.HostConfig.Memory}} "
                "{{.HostConfig.NanoCpus}}", first)  # fmt: skip
    assert given.split() == [str(256 * 2**20), str(15 * 10**8)]

    switched, detail = machine.deliver("b2-bbbbbbbbbbbb")
    assert switched and f"serving at {url}" in detail and "(was b1-aaaaaaaaaaaa)" in detail
    assert machine.releases.url() == url
    assert machine.labels() == ["neg", "neg"]
    assert first not in machine.containers() and len(machine.containers()) == 1


def test_deploying_what_serves_again_changes_nothing(machine: Machine):
    machine.deliver("b1-aaaaaaaaaaaa")
    before = machine.containers()
    switched, detail = machine.deliver("b1-aaaaaaaaaaaa")
    assert switched and "already serving" in detail and machine.containers() == before


@pytest.mark.parametrize(
    ("engine_name", "version", "said"),
    [
        ("podman", "b3-cccccccccccc", "health check /healthz failed for"),
        ("podman", "b4-dddddddddddd", "cannot load the model: model.joblib is truncated"),
        ("docker", "b4-dddddddddddd", "cannot load the model: model.joblib is truncated"),
    ],
    ids=["failing-health-check", "crash-on-start", "docker-crash-on-start"],
)
def test_a_new_version_that_fails_its_checks_leaves_the_old_one_serving(
    machine: Machine, version: str, said: str
):
    machine = Machine(**{**machine.__dict__, "deploy": DeployConfig(timeout=10)})
    machine.deliver("b1-aaaaaaaaaaaa")
    serving = machine.containers()
    with pytest.raises(StageFailed) as failed:
        machine.deliver(version)
    assert said in str(failed.value)
    assert "current release unchanged (b1-aaaaaaaaaaaa)" in str(failed.value)
    assert machine.labels() == ["pos", "pos"]
    assert machine.containers() == serving  # the failed one is removed
    assert (machine.releases.current() or {})["version"] == "b1-aaaaaaaaaaaa"


def test_the_registry_down_fails_the_pull_clearly_and_switches_nothing(machine: Machine):
    machine.deliver("b1-aaaaaaaaaaaa")
    record = machine.registry.records["b2-bbbbbbbbbbbb"]
    # A digest this machine does not hold, in a registry nobody answers for.
    gone = {
        **record,
        "image": "127.0.0.1:9/nowhere@sha256:" + "0" * 64,
        "digest": "sha256:" + "0" * 64,
    }
    with pytest.raises(
        StageFailed,
        match=r"pulling 127\.0\.0\.1:9/nowhere@sha256:0+ failed; current release unchanged",
    ):
        deliver(
            Containers(machine.engine), machine.releases, Target(gone, machine.deploy, TEXTS),
            lambda _: None, os.environ,
        )  # fmt: skip
    assert machine.labels() == ["pos", "pos"] and len(machine.containers()) == 1


def test_only_the_listed_variables_reach_the_container(
    machine: Machine, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("APP_KEY", "listed-value")
    monkeypatch.setenv("GITHUB_WEBHOOK_SECRET", "never-in-the-container")
    machine.deliver("b1-aaaaaaaaaaaa")
    (container,) = machine.containers()
    env = run(machine.engine, "inspect", "--format", "{{json .Config.Env}}", container)
    assert "APP_KEY=listed-value" in env and "never-in-the-container" not in env
    inspected = run(
        machine.engine, "inspect", "--format", "{{json .Config.Cmd}} {{json .Args}}", container
    )
    assert "listed-value" not in inspected  # passed by name, never on a command line


KILLED_DEPLOY = """\
import json, os, sys
from pathlib import Path
from trainhook.deployconfig import DeployConfig
from trainhook.models import audit_events
from trainhook.releases import Releases
from worker.container.engine import engine_named
from worker.container.release import Containers, Target, deliver

home, slug, record = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
deliver(
    Containers(engine_named("podman")), Releases(home, slug),
    Target(record, DeployConfig(timeout=600), ("a",)), lambda line: None, os.environ,
)
"""


def test_a_worker_killed_mid_deploy_leaves_no_orphan_and_no_half_switch_after_readopting(
    machine: Machine,
):
    machine.deliver("b1-aaaaaaaaaaaa")
    (serving,) = machine.containers()
    before = machine.releases.current()
    record = machine.registry.records["b5-eeeeeeeeeeee"]  # never healthy: killed while waiting
    worker = subprocess.Popen(
        [sys.executable, "-c", KILLED_DEPLOY, str(machine.home), machine.slug, json.dumps(record)]
    )
    deadline = time.monotonic() + 60
    while len(machine.containers()) < 2:
        assert worker.poll() is None and time.monotonic() < deadline, "no candidate started"
        time.sleep(0.2)
    time.sleep(1)  # the candidate is being health-checked now
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert machine.releases.current() == before  # nothing switched
    assert machine.labels() == ["pos", "pos"]

    said = adopt(Containers(machine.engine), machine.home, [machine.slug])

    assert machine.containers() == [serving], said
    assert machine.labels() == ["pos", "pos"]


def test_after_a_restart_the_serving_container_is_adopted_at_the_same_url(machine: Machine):
    machine.deliver("b1-aaaaaaaaaaaa")
    url = machine.releases.url()
    (serving,) = machine.containers()
    machine.forwarder.close()  # `trainhook up` stops; its containers keep running
    run(machine.engine, "stop", "--time", "5", serving)  # and this one stopped too (a reboot)

    said = adopt(Containers(machine.engine), machine.home, [machine.slug])
    again = Forwarder([Releases(machine.home, machine.slug)])
    try:
        assert again.start() == {machine.slug: int(url.rsplit(":", 1)[1])}
        assert any("restarted b1-aaaaaaaaaaaa" in line for line in said), said
        deadline = time.monotonic() + 30
        while True:
            try:
                assert predict(url) == ["pos", "pos"]
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.5)
        assert machine.containers() == [serving]
    finally:
        again.close()


def test_after_a_restart_a_removed_current_container_is_run_again_with_its_checks(
    machine: Machine,
):
    machine.deliver("b1-aaaaaaaaaaaa")
    (gone,) = machine.containers()
    run(machine.engine, "rm", "-f", "--time", "0", gone)  # removed while `up` was down
    containers = Containers(machine.engine)
    adopt(containers, machine.home, [machine.slug])

    said = revive(containers, machine.releases, machine.deploy, TEXTS, os.environ, print)

    assert said is not None and "ran the current release again" in said
    (again,) = machine.containers()
    assert again != gone and machine.labels() == ["pos", "pos"]
    assert revive(containers, machine.releases, machine.deploy, TEXTS, os.environ, print) is None


@pytest.fixture
def cli_env(machine: Machine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """The commands' environment for `machine`'s repository; returns its name."""
    name = "octo-org/" + machine.slug.removeprefix("github-octo-org--")
    config = tmp_path / "trainhook.toml"
    config.write_text(
        textwrap.dedent(f"""\
        [[repos]]
        name = "{name}"
        provider = "github"
        clone_url = "https://github.com/{name}.git"
        secret_env = "TEST_SECRET"
        [repos.deploy]
        timeout = 30
        """)
    )
    for key, value in {
        "TRAINHOOK_HOME": str(machine.home), "TRAINHOOK_CONFIG": str(config),
        "TEST_SECRET": "s" * 32, "TRAINHOOK_BUILDER": "podman",
    }.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    machine.home.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("TRAINHOOK_DATABASE_URL", f"sqlite:///{machine.home / 'trainhook.db'}")
    db.upgrade(f"sqlite:///{machine.home / 'trainhook.db'}")
    return name


def audited(machine: Machine) -> list[tuple[str, str]]:
    engine = sa.create_engine(f"sqlite:///{machine.home / 'trainhook.db'}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(audit_events.c.action, audit_events.c.detail))
            return [(r.action, r.detail) for r in rows]
    finally:
        engine.dispose()


def test_rollback_serves_the_release_before_the_current_one_at_the_same_url(
    machine: Machine, cli_env: str, capsys: pytest.CaptureFixture[str]
):
    for version in ("b1-aaaaaaaaaaaa", "b2-bbbbbbbbbbbb"):
        machine.releases.save(version, machine.registry.records[version])
        machine.deliver(version)
    assert machine.labels() == ["neg", "neg"]

    assert main(["rollback", cli_env]) == 0

    assert machine.labels() == ["pos", "pos"]
    assert (machine.releases.current() or {})["version"] == "b1-aaaaaaaaaaaa"
    assert len(machine.containers()) == 1
    assert "rolling back from b2-bbbbbbbbbbbb to b1-aaaaaaaaaaaa" in capsys.readouterr().out
    # The trail says who switched what users are served, as for a rebuild.
    (row,) = audited(machine)
    assert row[0] == "rollback" and "b2-bbbbbbbbbbbb -> b1-aaaaaaaaaaaa (build 1)" in row[1]


def test_a_rollback_that_fails_its_checks_says_why_and_leaves_the_current_one(
    machine: Machine, cli_env: str, capsys: pytest.CaptureFixture[str]
):
    machine.releases.save("b4-dddddddddddd", machine.registry.records["b4-dddddddddddd"])
    machine.releases.save("b1-aaaaaaaaaaaa", machine.registry.records["b1-aaaaaaaaaaaa"])
    machine.deliver("b1-aaaaaaaaaaaa")

    assert main(["rollback", cli_env, "b4-dddddddddddd"]) == 1

    err = capsys.readouterr().err
    assert "rollback to b4-dddddddddddd failed" in err and "model.joblib is truncated" in err
    assert machine.labels() == ["pos", "pos"]


def test_releases_lists_every_version_which_serves_and_the_url(
    machine: Machine, cli_env: str, capsys: pytest.CaptureFixture[str]
):
    for version in ("b1-aaaaaaaaaaaa", "b2-bbbbbbbbbbbb"):
        machine.releases.save(version, machine.registry.records[version])
    machine.deliver("b1-aaaaaaaaaaaa")
    capsys.readouterr()

    assert main(["releases", cli_env, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["url"] == machine.releases.url()
    assert [(r["version"], r["serving"]) for r in listed["releases"]] == [
        ("b2-bbbbbbbbbbbb", False), ("b1-aaaaaaaaaaaa", True),
    ]  # fmt: skip
    assert main(["releases", cli_env]) == 0
    text = capsys.readouterr().out
    assert machine.releases.url() in text and "* b1-aaaaaaaaaaaa" in text


def test_the_local_registry_keeps_its_address_across_restarts(tmp_path: Path):
    need_podman()  # the registry binary comes with the container tooling
    addresses = []
    for _ in range(2):
        process = start_local_registry(tmp_path)
        assert process is not None
        addresses.append((tmp_path / "oci-registry" / "address").read_text().strip())
        stop_registry(process)
    # Release records name images by this address: a rollback pulls from it.
    assert addresses[0] == addresses[1]


def test_a_killed_up_takes_its_registry_down_with_it_so_the_next_can_bind_the_port(
    tmp_path: Path,
):
    need_podman()  # the registry binary comes with the container tooling
    starter = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            from worker.container.registry import start_local_registry
            process = start_local_registry(Path({str(tmp_path)!r}))
            print(process.pid, flush=True)
            time.sleep(600)
        """)],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert starter.stdout is not None
    registry_pid = int(starter.stdout.readline())
    address = (tmp_path / "oci-registry" / "address").read_text().strip()

    starter.send_signal(signal.SIGKILL)  # as the OOM killer would: no cleanup runs
    starter.wait()

    deadline = time.monotonic() + 10
    while _running(registry_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(registry_pid), "the registry outlived the process that started it"
    again = start_local_registry(tmp_path)
    assert again is not None
    try:
        assert (tmp_path / "oci-registry" / "address").read_text().strip() == address
    finally:
        stop_registry(again)


def test_the_registry_waits_briefly_for_its_old_port_before_taking_a_new_one(tmp_path: Path):
    from worker.container.registry import _same_port_as_before

    folder = tmp_path / "oci-registry"
    folder.mkdir()
    holder = socket.create_server(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    (folder / "port").write_text(f"{port}\n")
    # A dying registry lets go of its socket a moment after it shows as gone.
    threading.Timer(0.5, holder.close).start()
    assert _same_port_as_before(folder) == port

    with socket.create_server(("127.0.0.1", port)):  # another program took it for good
        moved = _same_port_as_before(folder, grace=0.3)
    assert moved != port
    assert (folder / "port").read_text().strip() == str(moved)


def _running(pid: int) -> bool:
    """Whether `pid` is alive and not a zombie (an orphan is reaped by init)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_what_up_starts_readopts_and_forwards_the_stable_url(machine: Machine, cli_env: str):
    from trainhook.settings import load_settings
    from worker.container.serving import start_serving

    machine.deliver("b1-aaaaaaaaaaaa")
    machine.forwarder.close()  # the previous `up` is gone

    serving = start_serving(load_settings())
    try:
        assert serving is not None and serving.urls == {cli_env: machine.releases.url()}
        assert any("b1-aaaaaaaaaaaa serving at" in line for line in serving.adopted)
        assert machine.labels() == ["pos", "pos"]
    finally:
        assert serving is not None
        serving.close()
