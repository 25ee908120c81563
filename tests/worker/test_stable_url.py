"""The stable URL without an engine: the forwarder in front of two plain HTTP servers standing
in for two releases, the stable port's allocation, the local `[repos.deploy]` keys and the
smoke test's texts."""

from __future__ import annotations

import http.server
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trainhook.deployconfig import DeployConfig, DeployKeyError, parse_deploy
from trainhook.releases import STABLE_PORTS, Releases
from worker.container.forward import Forwarder


class Server:
    """A loopback HTTP server answering every GET with its name."""

    def __init__(self, name: str) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: one connection, several requests

            def do_GET(self) -> None:
                body = name.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def two() -> Iterator[tuple[Server, Server]]:
    old, new = Server("old"), Server("new")
    yield old, new
    old.close()
    new.close()


@pytest.fixture
def releases(tmp_path: Path) -> Iterator[Releases]:
    found = Releases(tmp_path / "home", "github-octo-org--stable")
    forwarder = Forwarder([found])
    forwarder.start()
    yield found
    forwarder.close()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def raw_get(sock: socket.socket) -> str:
    sock.settimeout(5)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while not data.endswith((b"old", b"new")):
        data += sock.recv(4096)
    return data.decode().rsplit("\r\n", 1)[-1]


def test_before_any_release_the_url_answers_503_saying_nothing_serves(releases: Releases):
    status, body = get(releases.url())
    assert status == 503 and "no release of this repository serves yet" in body


def test_a_switch_moves_new_connections_and_leaves_open_ones_where_they_were(
    releases: Releases, two: tuple[Server, Server]
):
    old, new = two
    releases.switch({"version": "v1", "port": old.port})
    open_before = socket.create_connection(("127.0.0.1", releases.stable_port()))
    assert raw_get(open_before) == "old"

    releases.switch({"version": "v2", "port": new.port})

    assert get(releases.url()) == (200, "new")
    # A connection made before the switch is not moved mid-stream.
    assert raw_get(open_before) == "old"
    open_before.close()


def test_the_stable_port_is_chosen_once_and_kept(tmp_path: Path):
    home = tmp_path / "home"
    port = Releases(home, "a").stable_port()
    assert port in STABLE_PORTS
    with socket.socket() as holder:
        # Even while something holds it (the running forwarder), a restart reads it back.
        holder.bind(("127.0.0.1", port))
        assert Releases(home, "a").stable_port() == port
    assert Releases(home, "b").stable_port() != port  # another repository gets its own


def test_a_closed_forwarder_has_released_its_port_when_close_returns(tmp_path: Path):
    """The next `up` binds the port at once (seen failing: a listener closed while its
    accept thread still waited on it stays bound until that wait ends)."""
    releases = Releases(tmp_path / "home", "restarted")
    for _ in range(5):
        forwarder = Forwarder([releases])
        assert forwarder.start() == {"restarted": releases.stable_port()}
        forwarder.close()
        with socket.socket() as next_up:
            next_up.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Forwarder does
            next_up.bind(("127.0.0.1", releases.stable_port()))


def test_a_port_held_by_another_process_is_left_to_it(tmp_path: Path):
    releases = Releases(tmp_path / "home", "held")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", releases.stable_port()))
        holder.listen()
        forwarder = Forwarder([releases])
        assert forwarder.start() == {}
        forwarder.close()


def test_local_deploy_keys_are_read_and_need_no_gke_keys():
    deploy = parse_deploy(
        {"port": 9000, "predict_path": "/v1/predict", "memory": "512M", "cpus": 0.5,
         "env": ["SENTRY_DSN", "SENTRY_DSN"]}
    )  # fmt: skip
    assert deploy == DeployConfig(
        port=9000, predict_path="/v1/predict", memory=512 * 2**20, cpus=0.5, env=("SENTRY_DSN",)
    )
    assert not deploy.gke


@pytest.mark.parametrize(
    ("table", "said"),
    [
        ({"port": 70000}, "key 'deploy.port': 70000"),
        ({"memory": "1K"}, "key 'deploy.memory'"),
        ({"cpus": 0}, "key 'deploy.cpus'"),
        ({"env": ["PORT"]}, "not PORT, which trainhook sets"),
        ({"env": ["A-B"]}, "key 'deploy.env'"),
        ({"predict_path": "predict; rm"}, "key 'deploy.predict_path'"),
        ({"port": 8080, "namespace": "ml"}, "missing required key 'deploy.cluster'"),
    ],
)
def test_bad_local_deploy_keys_are_refused_naming_the_key(table: dict[str, object], said: str):
    with pytest.raises(DeployKeyError, match=said.replace("(", r"\(")):
        parse_deploy(table)


def test_up_prints_each_repositorys_stable_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    from trainhook.cli.commands import print_banner
    from trainhook.settings import load_settings

    monkeypatch.delenv("TRAINHOOK_LOG_FORMAT", raising=False)
    settings = load_settings(
        {"TRAINHOOK_HOME": str(tmp_path), "TRAINHOOK_CONFIG": str(tmp_path / "none.toml"),
         "TRAINHOOK_BUILDER": "bundle"},
        require_repos=False,
    )  # fmt: skip
    print_banner(settings, "http://127.0.0.1:8000", urls={"octo/app": "http://127.0.0.1:20001"})
    out = capsys.readouterr().out
    assert "model URL   : http://127.0.0.1:20001  (octo/app, the same for every version)" in out


def test_the_smoke_test_posts_texts_from_the_builds_own_training_data(tmp_path: Path):
    from types import SimpleNamespace

    from worker.container.builder import smoke_texts
    from worker.local.healthcheck import PROBE_TEXTS

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.csv").write_text(
        "tweet,label\n,neutral\nfirst flight,positive\n" + "x" * 900 + ",negative\nthird,neutral\n"
    )
    repo = SimpleNamespace(text_column="tweet")

    def ctx(path: str | None) -> Any:
        return SimpleNamespace(data=SimpleNamespace(path=path), source=tmp_path, repo=repo)

    # Rows without a text are passed over; one huge cell is cut short.
    assert smoke_texts(ctx("data/train.csv")) == ("first flight", "x" * 500, "third")
    for elsewhere in ("gs://bucket/train.csv", None, "data/missing.csv"):
        assert smoke_texts(ctx(elsewhere)) == PROBE_TEXTS


def test_the_smoke_test_never_posts_lines_of_a_file_a_symlink_leads_to_outside_the_checkout(
    tmp_path: Path,
):
    from types import SimpleNamespace

    from worker.container.builder import smoke_texts
    from worker.local.healthcheck import PROBE_TEXTS

    outside = tmp_path / "host-secrets.csv"
    outside.write_text("tweet,label\nTOKEN=one,x\nTOKEN=two,x\nTOKEN=three,x\n")
    checkout = tmp_path / "checkout"
    (checkout / "data").mkdir(parents=True)
    (checkout / "data" / "train.csv").symlink_to(outside)
    (checkout / "linked").symlink_to(tmp_path)
    repo = SimpleNamespace(text_column="tweet")
    for path in ("data/train.csv", "linked/host-secrets.csv"):
        ctx: Any = SimpleNamespace(data=SimpleNamespace(path=path), source=checkout, repo=repo)
        assert smoke_texts(ctx) == PROBE_TEXTS


def test_a_container_the_engine_fails_to_start_fails_the_deploy_and_is_removed_by_name(
    tmp_path: Path,
):
    from collections.abc import Mapping

    from worker.container.engine import Engine
    from worker.container.release import Containers, Target, deliver
    from worker.stage import StageFailed

    class RunFails(Containers):
        def __init__(self, engine: Engine) -> None:
            super().__init__(engine)
            self.removed: list[str] = []

        def output(self, args: list[str], env: Mapping[str, str] | None = None) -> str:
            if args[0] == "run":
                raise RuntimeError("run -d failed: container exited while its port was set up")
            return "sha256:present"  # `image inspect`: the image is here, nothing to pull

        def running(self, container: Any) -> bool:
            return False

        def remove(self, container: str, grace: int = 0) -> None:
            self.removed.append(container)

    releases = Releases(tmp_path / "home", "github-octo-org--app")
    releases.switch({"version": "b1", "digest": "sha256:1", "port": 1, "container": "old"})
    record = {"version": "b2", "digest": "sha256:2", "image": "127.0.0.1:5000/app@sha256:2"}
    containers = RunFails(Engine("podman", ("podman",)))

    said = r"did not start: run -d failed.*current release unchanged"
    with pytest.raises(StageFailed, match=said):
        deliver(containers, releases, Target(record, DeployConfig(), ("a",)), print, {})

    (name,) = containers.removed
    assert name.startswith("trainhook-github-octo-org--app-b2-")
    assert (releases.current() or {})["version"] == "b1"
