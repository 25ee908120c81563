"""Queue fixtures: the same tests over the SQL queue (SQLite, PostgreSQL) and the Pub/Sub queue
(PostgreSQL + the official emulator, each test with its own topic and subscriptions)."""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import new_pg_database
from tests.support.pubsub import PubSubEmulator, emulator_or_skip
from trainhook.builds import BuildSpec, create_build
from trainhook.db import make_engine, reading
from trainhook.models import builds, jobs, stage_events
from trainhook.runtime import Runtime, build_runtime
from trainhook.settings import Settings
from worker.context import BuildContext
from worker.loop import Worker
from worker.pipeline import Pipeline
from worker.stage import Outcome, SingleStage

REPO = "octo-org/social-score-api"
STAGES = ("checkout", "test", "hash", "train", "build", "push", "deploy", "vertex")
KINDS = [
    "sql-sqlite",
    pytest.param("sql-postgres", marks=pytest.mark.postgres),
    pytest.param("pubsub-postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(scope="session")
def pubsub_emulator() -> Iterator[PubSubEmulator]:
    emulator = emulator_or_skip()
    yield emulator
    emulator.stop()


def pubsub_env(emulator: PubSubEmulator) -> dict[str, str]:
    """Settings for a fresh set of Pub/Sub names on the emulator, with short test timings."""
    tag = uuid.uuid4().hex[:10]
    return {
        "TRAINHOOK_QUEUE": "pubsub",
        "TRAINHOOK_PUBSUB_PROJECT": "trainhook-test",
        "TRAINHOOK_PUBSUB_TOPIC": f"jobs-{tag}",
        "TRAINHOOK_PUBSUB_SUBSCRIPTION": f"work-{tag}",
        "TRAINHOOK_PUBSUB_PULL_SECONDS": "2",
        "TRAINHOOK_PUBSUB_PUBLISH_TIMEOUT": "3",
        "TRAINHOOK_PUBSUB_SWEEP_SECONDS": "1",
    }


@dataclass
class Stack:
    """One database (and, for Pub/Sub, one set of topics) shared by several runtimes, as
    several processes would share them."""

    kind: str
    url: str
    engine: sa.Engine
    make_settings: Callable[..., Settings]
    env: dict[str, str]
    opened: list[Runtime] = field(default_factory=list)
    branches: tuple[str, ...] = ("*",)

    @property
    def pubsub(self) -> bool:
        return self.kind.startswith("pubsub")

    def settings(self, **env: str) -> Settings:
        return self.make_settings(self.url, branches=self.branches, env={**self.env, **env})

    def runtime(self, **env: str) -> Runtime:
        """A runtime of its own (its own Pub/Sub clients), like another process's."""
        runtime = build_runtime(self.settings(**env), self.engine)
        self.opened.append(runtime)
        return runtime

    def setup_pubsub(self) -> None:
        from trainhook.queue.admin import setup_pubsub
        from trainhook.queue.pubsubclients import PubSubClients

        clients = PubSubClients.from_settings(self.settings())
        try:
            setup_pubsub(self.settings(), clients)
        finally:
            clients.close()

    def close(self) -> None:
        for runtime in self.opened:
            close = getattr(runtime.queue, "close", None)
            if close is not None:
                close()


def process_env(stack: Stack, tmp_path: Path) -> dict[str, str]:
    """The environment a `trainhook` process would get for this stack (and its database)."""
    from tests.conftest import SECRET

    stack.settings()  # writes the repositories file
    return {
        **stack.env,
        "TRAINHOOK_HOME": str(tmp_path / "home"),
        "TRAINHOOK_CONFIG": str(tmp_path / "trainhook.toml"),
        "TRAINHOOK_DATABASE_URL": stack.url,
        "TEST_WEBHOOK_SECRET": SECRET,
    }


def open_stack(
    kind: str, request: pytest.FixtureRequest, make_settings: Callable[..., Settings]
) -> Stack:
    tmp: Path = request.getfixturevalue("tmp_path")
    if kind.endswith("sqlite"):
        url = f"sqlite:///{tmp / 'trainhook.db'}"
        shutil.copy(request.getfixturevalue("sqlite_template"), tmp / "trainhook.db")
    else:
        url = new_pg_database(request.getfixturevalue("pg_server"))
    env: dict[str, str] = {"TRAINHOOK_LEASE_SECONDS": "5"}
    if kind.startswith("pubsub"):
        emulator = request.getfixturevalue("pubsub_emulator")
        request.getfixturevalue("monkeypatch").setenv("PUBSUB_EMULATOR_HOST", emulator.host)
        env.update(pubsub_env(emulator))
    stack = Stack(kind, url, make_engine(url), make_settings, env)
    if stack.pubsub:
        stack.setup_pubsub()
    return stack


@pytest.fixture(params=KINDS)
def stack(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings]
) -> Iterator[Stack]:
    """The queue contract runs over every implementation."""
    opened = open_stack(request.param, request, make_settings)
    yield opened
    opened.close()
    opened.engine.dispose()


@pytest.fixture
def pstack(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings]
) -> Iterator[Stack]:
    """Pub/Sub + PostgreSQL only (the production pair)."""
    opened = open_stack("pubsub-postgres", request, make_settings)
    yield opened
    opened.close()
    opened.engine.dispose()


def new_build(
    engine: sa.Engine, sha: str = "a" * 40, *, ref: str = "refs/heads/main", repo: str = REPO
) -> int:
    with engine.begin() as conn:
        return create_build(
            conn, BuildSpec(provider="github", repo=repo, ref=ref, sha=sha, trigger="push")
        )


def publish(runtime: Runtime, build_ids: list[int]) -> None:
    """Hand committed jobs to the queue and, with Pub/Sub, wait until they are published."""
    relay = getattr(runtime.queue, "relay", None)
    if relay is None:
        runtime.queue.notify(build_ids)
    else:
        assert relay.publish(build_ids).ok


def job(engine: sa.Engine, build_id: int) -> Any:
    with reading(engine) as conn:
        return conn.execute(sa.select(jobs).where(jobs.c.build_id == build_id)).one()


def build_status(engine: sa.Engine, build_id: int) -> Any:
    with reading(engine) as conn:
        return conn.execute(sa.select(builds).where(builds.c.id == build_id)).one()


def stage_runs(engine: sa.Engine, stage: str) -> dict[int, int]:
    """Build id -> how many times `stage` was started."""
    query = (
        sa.select(stage_events.c.build_id, sa.func.count())
        .where(stage_events.c.stage == stage, stage_events.c.status == "running")
        .group_by(stage_events.c.build_id)
    )
    with reading(engine) as conn:
        return {b: int(n) for b, n in conn.execute(query)}


class Counter:
    """A toy pipeline that counts, per build, how many times each stage really ran."""

    def __init__(self, overrides: dict[str, Callable[[BuildContext], Outcome]] | None = None):
        self.lock = threading.Lock()
        self.runs: dict[tuple[int, str], int] = {}
        self.overrides = overrides or {}

    def stage(self, name: str) -> Callable[[BuildContext], Outcome]:
        def run(ctx: BuildContext) -> Outcome:
            with self.lock:
                key = (ctx.build.id, name)
                self.runs[key] = self.runs.get(key, 0) + 1
            override = self.overrides.get(name)
            return override(ctx) if override else Outcome(detail="ok")

        return run

    def pipeline(self, *, resumable: bool = False) -> Pipeline:
        return Pipeline(
            [SingleStage(name, self.stage(name), resumable=resumable) for name in STAGES]
        )

    def count(self, build_id: int, stage: str = "train") -> int:
        return self.runs.get((build_id, stage), 0)


def run_workers(
    runtimes: list[Runtime],
    pipeline: Pipeline,
    until: Callable[[], bool],
    timeout: float = 60.0,
    *,
    backoff: float = 10.0,
) -> None:
    """Run one worker thread per runtime until `until()` holds; fail after `timeout`."""
    with workers_running(runtimes, pipeline, backoff=backoff):
        deadline = time.monotonic() + timeout
        while not until():
            assert time.monotonic() < deadline, f"not done within {timeout}s"
            time.sleep(0.1)


@contextlib.contextmanager
def workers_running(
    runtimes: list[Runtime], pipeline: Pipeline, *, backoff: float = 10.0
) -> Iterator[None]:
    """One worker thread per runtime while the block runs; stopped (and joined) after it."""
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=Worker(
                rt,
                owner=f"w{i}-{uuid.uuid4().hex[:4]}",
                pipeline=pipeline,
                backoff=lambda attempt: backoff,
            ).run,
            args=(stop,),
            daemon=True,
        )
        for i, rt in enumerate(runtimes)
    ]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)


def all_finished(engine: sa.Engine, count: int) -> Callable[[], bool]:
    def check() -> bool:
        with reading(engine) as conn:
            done = conn.execute(
                sa.select(sa.func.count()).where(
                    builds.c.status.in_(("succeeded", "failed", "cancelled"))
                )
            ).scalar_one()
        return int(done) >= count

    return check
