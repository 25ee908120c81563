"""A Hypothesis state machine over the life of builds, against the real service and worker.

Operations: a new signed GitHub push through the ASGI app, a redelivery of one already sent,
`POST /rebuild` (by ref or sha, sometimes forced), `trainhook replay`, a worker that dies
mid-stage holding its lease, a lease's worth of time passing (the queue's clock moves, so the
real claim finds the lease expired), the real Worker loop over a fast pipeline (drain, or stop
gracefully mid-build, or meet an infrastructure fault), a restart of the service and its
database connections, and (PostgreSQL) a restart of the database server under the service.
After every step the database is checked against what was acknowledged; at the end every job
is drained and every build must have ended.

The pipeline is the real Worker's, only its stages are fast stand-ins: checkout resolves a ref
from a table standing for the mirror, hash derives the model key from the data the commit
holds (so two commits with the same data share a key, as with the real hash stage), and train
reuses the model of a succeeded build of the same key unless the build is forced.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sys
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from starlette.testclient import TestClient

from service.app import create_app
from tests.conftest import new_pg_database
from tests.service.github_payloads import push_payload, signed
from trainhook.builds import TERMINAL_BUILD, set_cache_key, set_sha
from trainhook.cli.replay import ReplayFilter, replay
from trainhook.db import make_engine, reading
from trainhook.models import builds, deliveries, jobs, stage_events, utcnow
from trainhook.runtime import Runtime, build_runtime
from trainhook.settings import Settings
from worker.context import BuildContext, CacheKeys
from worker.loop import Worker
from worker.pipeline import Pipeline
from worker.stage import Outcome, SingleStage, StageFailed, skipped

REPO = "octo-org/social-score-api"
LEASE_SECONDS = 60.0  # never runs out by itself within a run: only `leases_expire` ends one
MAX_ATTEMPTS = 2  # low, so a few steps take a job past it (faults, stops, deaths)
STAGES = ("checkout", "test", "hash", "train", "build", "push", "deploy", "vertex")
GOOD = ("1" * 40, "2" * 40, "3" * 40)
BROKEN = "badc0de0" * 5  # its tests fail: the builds that replay has to work with
SHAS = (*GOOD, BROKEN)
# The data file each commit holds: the first two commits share it, so they share a model key.
DATA = {GOOD[0]: "blob-a", GOOD[1]: "blob-a", GOOD[2]: "blob-b", BROKEN: "blob-b"}
STATUS_RANK = {"queued": 0, "running": 1, **{s: 2 for s in TERMINAL_BUILD}}


def model_key(repo: str, sha: str) -> str:
    """The model key the hash stage derives: from the data's content id, not the commit."""
    return hashlib.sha256(f"{repo}\n{DATA[sha]}".encode()).hexdigest()


class WorkerDied(BaseException):
    """The worker process is gone mid-stage (SIGKILL, OOM): nothing after it runs, not even
    the worker's own error handling, which catches only Exception."""


class QueueClock:
    """The queue's clock (`trainhook.queue.sql.utcnow`), which only the machine moves forward
    past real time: a lease then runs out at a chosen step, never by how fast a step ran,
    so every example replays the same way (Hypothesis needs that to shrink)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return utcnow() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@dataclass
class World:
    """What the stand-in stages read and what they report to the checks."""

    # ref -> sha: the mirror's refs. main exists before the first push reaches trainhook,
    # so a rebuild of main builds something; `wip` only after a push to it.
    heads: dict[str, str] = field(default_factory=lambda: {"refs/heads/main": GOOD[0]})
    crash_at: str | None = None  # the next stage to reach this dies with its worker
    stop_at: str | None = None  # ... asks its worker to stop after it (SIGTERM)
    fault_at: str | None = None  # ... fails with an infrastructure error, once
    stop: threading.Event = field(default_factory=threading.Event)
    trained: list[tuple[int, str]] = field(default_factory=list)  # (build, model key)
    ran: list[tuple[int, str, int]] = field(default_factory=list)  # (build, stage, attempt)


def fast_pipeline(world: World) -> Pipeline:
    def checkout(ctx: BuildContext) -> Outcome:
        if ctx.build.sha:
            return Outcome(detail=f"exported {ctx.build.sha[:12]}")
        resolved = world.heads.get(ctx.build.ref)
        if resolved is None:
            raise StageFailed(f"{ctx.build.ref} is not in the mirror")
        with ctx.engine.begin() as conn:
            set_sha(conn, ctx.build.id, resolved)
        ctx.build = replace(ctx.build, sha=resolved)
        return Outcome(detail=f"{ctx.build.ref} is {resolved[:12]}")

    def test(ctx: BuildContext) -> Outcome:
        if ctx.build.sha == BROKEN:
            raise StageFailed("2 tests failed")
        return Outcome(detail="12 passed")

    def hash_stage(ctx: BuildContext) -> Outcome:
        key = model_key(ctx.build.repo, ctx.build.sha)
        ctx.keys = CacheKeys(deps="deps", nltk="nltk", model=key)
        with ctx.engine.begin() as conn:
            set_cache_key(conn, ctx.build.id, key)
        return Outcome(detail=f"model key {key[:12]}")

    def train(ctx: BuildContext) -> Outcome:
        if ctx.keys is None:
            raise RuntimeError("no cache key: the hash stage has not run")
        key = ctx.keys.model
        if not ctx.build.force:
            with reading(ctx.engine) as conn:
                producer = conn.execute(
                    sa.select(builds.c.id)
                    .where(builds.c.cache_key == key, builds.c.status == "succeeded")
                    .limit(1)
                ).scalar()
            if producer is not None:
                return Outcome(cache="hit", detail=f"model of build #{producer} reused")
        world.trained.append((ctx.build.id, key))
        return Outcome(cache="miss", detail=f"trained, stored as key {key[:12]}")

    def done(ctx: BuildContext) -> Outcome:
        return Outcome(detail="ok")

    def vertex(ctx: BuildContext) -> Outcome:
        return skipped("Vertex AI pipelines need the Cloud Build builder")

    bodies: dict[str, Callable[[BuildContext], Outcome]] = {
        "checkout": checkout,
        "test": test,
        "hash": hash_stage,
        "train": train,
        "build": done,
        "push": done,
        "deploy": done,
        "vertex": vertex,
    }

    def staged(name: str) -> Callable[[BuildContext], Outcome]:
        body = bodies[name]

        def run(ctx: BuildContext) -> Outcome:
            world.ran.append((ctx.build.id, name, ctx.attempt))
            if world.crash_at == name:
                world.crash_at = None
                raise WorkerDied(f"worker killed in {name} of build {ctx.build.id}")
            if world.fault_at == name:
                world.fault_at = None
                raise ConnectionError("registry unreachable")
            outcome = body(ctx)
            if world.stop_at == name:
                world.stop_at = None
                world.stop.set()
            return outcome

        return run

    # As in the real pipeline: only `test` resumes (it leaves nothing later stages read).
    return Pipeline([SingleStage(name, staged(name), resumable=name == "test") for name in STAGES])


@dataclass(frozen=True)
class Sent:
    """A delivery the service acknowledged: what was sent and the build it answered with."""

    delivery: str
    body: bytes
    headers: dict[str, str]
    build_id: int | None  # None: answered "ignored"


@dataclass(frozen=True)
class Expected:
    """A build some acknowledged request created, and what it was asked to be."""

    trigger: str
    force: bool
    replay_of: int | None = None


@dataclass
class Database:
    """A migrated, empty database for one example, and how to restart what serves it."""

    url: str
    restart_server: Callable[[], None] | None = None
    drop: Callable[[], None] = lambda: None


@dataclass
class Snapshot:
    """The rows the checks read, all in one read transaction."""

    builds: dict[int, Any]
    deliveries: dict[str, Any]
    jobs: dict[int, list[Any]]
    train_cache: dict[int, str | None]  # build -> cache of its latest succeeded train
    event_counts: dict[int, int]


class BuildLifecycle(RuleBasedStateMachine):
    """One run: a fresh database, the service over it, and what it acknowledged so far.
    `new_database`, `make_settings` and `clock` are set by `run_machine`."""

    new_database: Callable[[], Database]
    make_settings: Callable[[str], Settings]
    clock: QueueClock

    sent = Bundle("sent")

    def __init__(self) -> None:
        super().__init__()
        self.database = self.new_database()
        self.settings = self.make_settings(self.database.url)
        self.world = World()
        self.pipeline = fast_pipeline(self.world)
        self.expected: dict[int, Expected] = {}
        self.acknowledged: dict[str, Sent] = {}
        self.history: dict[int, list[str]] = defaultdict(list)
        self.frozen_events: dict[int, int] = {}
        self.deliveries_made = 0
        self.workers_made = 0
        self.server_restarted = False
        self._service = contextlib.ExitStack()
        self._open()

    # --- the service: opened, restarted, closed -----------------------------------------

    def _open(self) -> None:
        self.runtime: Runtime = build_runtime(self.settings, make_engine(self.database.url))
        self.client = self._service.enter_context(
            TestClient(create_app(self.runtime), raise_server_exceptions=False)
        )

    def _close(self) -> None:
        self._service.close()
        self.runtime.close()

    def teardown(self) -> None:
        # Called from a `finally`: when a step already failed, its error is the report.
        step_failed = sys.exc_info()[0] is not None
        try:
            if not step_failed:
                self._drain_to_the_end()
        finally:
            self._close()
            self.database.drop()

    # --- operations -------------------------------------------------------------------------

    @rule(target=sent, sha=st.sampled_from(SHAS), branch=st.sampled_from(["main", "main", "wip"]))
    def deliver(self, sha: str, branch: str) -> Sent:
        self.deliveries_made += 1
        delivery = f"delivery-{self.deliveries_made}"
        ref = f"refs/heads/{branch}"
        body, headers = signed(push_payload(ref=ref, after=sha), delivery=delivery)
        self.world.heads[ref] = sha  # the push reached the forge (and the mirror) first
        stale = branch == "main" and self._behind_deployed(ref, sha)
        answer = self.client.post("/webhooks/github", content=body, headers=headers)
        data = answer.json()
        if stale:
            # The deployed commit, or one built before it: a stale push builds nothing.
            assert (answer.status_code, data["status"]) == (200, "ignored"), data
            assert data["reason"].startswith(f"stale push: {sha[:12]} is "), data
            build_id = None
        elif branch == "main":
            assert answer.status_code == 202, data
            assert data["status"] == "queued"
            build_id = int(data["build_id"])
            assert build_id not in self.expected, f"build {build_id} answered twice"
            self.expected[build_id] = Expected("push", force=False)
        else:
            assert (answer.status_code, data["status"]) == (200, "ignored"), data
            build_id = None
        sent = Sent(delivery, body, headers, build_id)
        self.acknowledged[delivery] = sent
        return sent

    @rule(sent=sent)
    def redeliver(self, sent: Sent) -> None:
        answer = self.client.post("/webhooks/github", content=sent.body, headers=sent.headers)
        data = answer.json()
        assert answer.status_code == 200, data
        if sent.build_id is None:
            assert data["status"] == "ignored", data
        else:
            assert data == {"status": "duplicate", "build_id": sent.build_id}

    @rule(
        what=st.one_of(
            st.fixed_dictionaries({"ref": st.sampled_from(["main", "refs/heads/main", "wip"])}),
            st.fixed_dictionaries({"sha": st.sampled_from(SHAS)}),
        ),
        force=st.booleans(),
    )
    def rebuild(self, what: dict[str, str], force: bool) -> None:
        answer = self.client.post(
            "/rebuild",
            headers={"Authorization": f"Bearer {self.settings.api_token}"},
            content=json.dumps({"repo": REPO, **what, "force": force}),
        )
        assert answer.status_code == 202, answer.text
        build_id = int(answer.json()["build_id"])
        assert build_id not in self.expected
        self.expected[build_id] = Expected("rebuild", force=force)

    @rule(status=st.sampled_from([None, "failed", "succeeded"]), force=st.booleans())
    def replay_past_builds(self, status: str | None, force: bool) -> None:
        before = self._snapshot().builds
        report = replay(self.runtime, ReplayFilter(status=status), force=force)
        replayed = [old for old, _ in report.queued]
        assert len(set(replayed)) == len(replayed), f"replayed twice in one run: {replayed}"
        for old, new in report.queued:
            was = before[old].status
            allowed = {"failed", "cancelled"} | ({"succeeded", "superseded"} if force else set())
            assert was in allowed, f"build {old} replayed while {was} (force={force})"
            assert new not in self.expected
            self.expected[new] = Expected("replay", force=force, replay_of=old)

    @rule(stage=st.sampled_from(STAGES))
    def worker_dies(self, stage: str) -> None:
        """The next job to reach `stage` kills its worker there: the job keeps its lease,
        which nobody renews, and the stage stays started."""
        self.world.crash_at = stage
        try:
            self._worker().run(self.world.stop, burst=True)
        except WorkerDied:
            pass
        finally:
            self.world.crash_at = None

    @rule(
        stop_at=st.none() | st.sampled_from(STAGES),
        fault_at=st.none() | st.sampled_from(STAGES),
    )
    def run_worker(self, stop_at: str | None, fault_at: str | None) -> None:
        """Drain what is runnable; `stop_at`: the worker is asked to stop (SIGTERM) during
        that stage of the first build to reach it; `fault_at`: that stage fails once with
        an infrastructure error (released, retried at once, dead after MAX_ATTEMPTS)."""
        self.world.stop_at, self.world.fault_at = stop_at, fault_at
        try:
            self._worker().run(self.world.stop, burst=True)
        finally:
            self.world.stop_at = self.world.fault_at = None

    @precondition(lambda self: self._dead_worker_leases())
    @rule()
    def leases_expire(self) -> None:
        """A lease's worth of time passes: the jobs whose workers died are runnable again."""
        self._wait_for_leases()

    @rule()
    def restart_service(self) -> None:
        """The service stops (its engine disposed: every database connection closed) and
        starts again on the same database."""
        self._close()
        self._open()

    @precondition(lambda self: self.database.restart_server and not self.server_restarted)
    @rule()
    def restart_database_server(self) -> None:
        """The database server restarts under the running service, whose pooled connections
        die with it (PostgreSQL only; once per run, a restart costs half a second)."""
        assert self.database.restart_server is not None
        self.server_restarted = True
        self.database.restart_server()

    # --- helpers ----------------------------------------------------------------------------

    def _worker(self) -> Worker:
        self.world.stop.clear()
        self.workers_made += 1
        return Worker(
            self.runtime,
            owner=f"worker-{self.workers_made}",
            pipeline=self.pipeline,
            backoff=lambda attempt: 0.0,
        )

    def _dead_worker_leases(self) -> bool:
        with reading(self.runtime.engine) as conn:
            running = conn.execute(
                sa.select(sa.func.count()).where(jobs.c.status == "running")
            ).scalar_one()
        return int(running) > 0

    def _wait_for_leases(self) -> None:
        self.clock.advance(LEASE_SECONDS + 1)

    def _drain_to_the_end(self) -> None:
        """Every acknowledged build ends: the dead workers' jobs come back, one last worker
        runs everything, and nothing is left queued or running."""
        for _ in range(MAX_ATTEMPTS + 2):
            self._wait_for_leases()
            self._worker().run(self.world.stop, burst=True)
            if not self._dead_worker_leases():
                break
        self.database_agrees_with_what_was_acknowledged()
        snap = self._snapshot()
        unfinished = {b: r.status for b, r in snap.builds.items() if r.status not in TERMINAL_BUILD}
        assert not unfinished, f"builds never finished: {unfinished}"
        for build_id, rows in snap.jobs.items():
            assert rows[0].status in ("done", "dead"), (build_id, rows[0].status)

    def _behind_deployed(self, ref: str, sha: str) -> bool:
        """The model of stale pushes: `sha` is the commit of the newest build of `ref` whose
        deploy succeeded, or an earlier build of `ref` had it."""
        with reading(self.runtime.engine) as conn:
            rows = conn.execute(
                sa.select(builds.c.id, builds.c.sha).where(
                    builds.c.repo == REPO, builds.c.ref == ref
                )
            ).all()
            deployed_ids = set(
                conn.execute(
                    sa.select(stage_events.c.build_id).where(
                        stage_events.c.stage == "deploy", stage_events.c.status == "succeeded"
                    )
                ).scalars()
            )
        deployed = [row for row in rows if row.id in deployed_ids]
        if not deployed:
            return False
        last = max(deployed, key=lambda row: row.id)
        return sha == last.sha or any(row.sha == sha and row.id < last.id for row in rows)

    def _snapshot(self) -> Snapshot:
        with reading(self.runtime.engine) as conn:
            build_rows = {r.id: r for r in conn.execute(sa.select(builds))}
            delivery_rows = {r.delivery_id: r for r in conn.execute(sa.select(deliveries))}
            job_rows: dict[int, list[Any]] = defaultdict(list)
            for r in conn.execute(sa.select(jobs).order_by(jobs.c.id)):
                job_rows[r.build_id].append(r)
            train_cache: dict[int, str | None] = {}
            trains = (
                sa.select(stage_events.c.build_id, stage_events.c.cache)
                .where(stage_events.c.stage == "train", stage_events.c.status == "succeeded")
                .order_by(stage_events.c.id)
            )
            for build_id, cache in conn.execute(trains):
                train_cache[build_id] = cache
            counts = sa.select(stage_events.c.build_id, sa.func.count()).group_by(
                stage_events.c.build_id
            )
            event_counts = {int(b): int(n) for b, n in conn.execute(counts)}
        return Snapshot(build_rows, delivery_rows, job_rows, train_cache, event_counts)

    # --- invariants -------------------------------------------------------------------------

    @invariant()
    def database_agrees_with_what_was_acknowledged(self) -> None:
        snap = self._snapshot()
        self._no_acknowledged_delivery_lost(snap)
        self._every_build_was_asked_for(snap)
        self._one_trained_success_per_key(snap)
        self._statuses_never_regress(snap)
        self._jobs_pending_or_builds_ended(snap)
        self._attempts_within_the_limit()

    def _no_acknowledged_delivery_lost(self, snap: Snapshot) -> None:
        by_delivery_row: dict[int, list[int]] = defaultdict(list)
        for build in snap.builds.values():
            if build.delivery_id is not None:
                by_delivery_row[build.delivery_id].append(build.id)
        assert len(snap.deliveries) == len(self.acknowledged), "a delivery row nobody sent"
        for delivery, sent in self.acknowledged.items():
            row = snap.deliveries.get(delivery)
            assert row is not None, f"acknowledged delivery {delivery} has no row"
            made = by_delivery_row.get(row.id, [])
            wanted = [] if sent.build_id is None else [sent.build_id]
            assert made == wanted, f"delivery {delivery}: builds {made}, answered {wanted}"

    def _every_build_was_asked_for(self, snap: Snapshot) -> None:
        assert set(snap.builds) == set(self.expected), (
            f"builds nobody asked for: {sorted(set(snap.builds) - set(self.expected))}; "
            f"asked for and missing: {sorted(set(self.expected) - set(snap.builds))}"
        )
        for build_id, want in self.expected.items():
            row = snap.builds[build_id]
            got = Expected(row.trigger, bool(row.force), row.replay_of)
            assert got == want, f"build {build_id} is {got}, was asked as {want}"
        children = Counter(r.replay_of for r in snap.builds.values() if r.replay_of is not None)
        twice = {old: n for old, n in children.items() if n > 1}
        assert not twice, f"builds replayed more than once: {twice}"

    def _one_trained_success_per_key(self, snap: Snapshot) -> None:
        trained_successes: dict[str, list[int]] = defaultdict(list)
        for build in snap.builds.values():
            if build.status != "succeeded":
                continue
            assert build.sha and build.cache_key == model_key(build.repo, build.sha), (
                f"succeeded build {build.id}: sha {build.sha!r}, key {build.cache_key!r}"
            )
            if not build.force and snap.train_cache.get(build.id) == "miss":
                trained_successes[build.cache_key].append(build.id)
        twice = {key[:12]: ids for key, ids in trained_successes.items() if len(ids) > 1}
        assert not twice, f"one model key trained by several succeeded builds: {twice}"
        for build_id, key in self.world.trained:
            row = snap.builds[build_id]
            assert key == model_key(row.repo, row.sha), f"build {build_id} trained key {key}"

    def _statuses_never_regress(self, snap: Snapshot) -> None:
        for build_id, row in snap.builds.items():
            seen = self.history[build_id]
            if not seen or seen[-1] != row.status:
                seen.append(row.status)
            ranks = [STATUS_RANK[s] for s in seen]
            assert ranks == sorted(ranks), f"build {build_id} went {' → '.join(seen)}"
            terminal = [s for s in seen if s in TERMINAL_BUILD]
            assert len(terminal) <= 1, f"build {build_id} went {' → '.join(seen)}"
            if row.status in TERMINAL_BUILD:
                events = snap.event_counts.get(build_id, 0)
                frozen = self.frozen_events.setdefault(build_id, events)
                assert events == frozen, f"build {build_id} got stage events once {row.status}"

    def _jobs_pending_or_builds_ended(self, snap: Snapshot) -> None:
        for build_id, row in snap.builds.items():
            rows = snap.jobs.get(build_id, [])
            assert len(rows) == 1, f"build {build_id} has {len(rows)} job rows"
            job = rows[0]
            if job.status in ("queued", "running"):
                continue
            assert row.status in TERMINAL_BUILD, f"job {job.status}, build {row.status}"
            if job.status == "dead":
                assert row.status == "failed", f"dead job, build {build_id} {row.status}"

    def _attempts_within_the_limit(self) -> None:
        over = {(b, s, a) for b, s, a in self.world.ran if a > MAX_ATTEMPTS}
        assert not over, f"stages run beyond TRAINHOOK_MAX_ATTEMPTS={MAX_ATTEMPTS}: {over}"


def machine_settings(examples: int, steps: int) -> settings:
    # derandomize + no example database: CI runs the same examples every time.
    return settings(
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
        # Not `explain`: it traces every line executed, which makes each example many times
        # slower on Python < 3.12 for a report the printed steps already give.
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    )


def run_machine(
    new_database: Callable[[], Database],
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    examples: int,
    steps: int,
) -> None:
    env = {
        "TRAINHOOK_LEASE_SECONDS": str(LEASE_SECONDS),
        "TRAINHOOK_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        "TRAINHOOK_POLL_INTERVAL": "0.05",
    }

    class Machine(BuildLifecycle):
        pass

    Machine.clock = QueueClock()
    monkeypatch.setattr("trainhook.queue.sql.utcnow", Machine.clock)
    Machine.new_database = staticmethod(new_database)  # type: ignore[method-assign]
    Machine.make_settings = staticmethod(  # type: ignore[method-assign]
        lambda url: make_settings(url, branches=("main",), env=env)
    )
    run_state_machine_as_test(Machine, settings=machine_settings(examples, steps))


@pytest.fixture
def sqlite_databases(tmp_path: Path, sqlite_template: Path) -> Callable[[], Database]:
    """A fresh copy of the migrated template per run of the machine."""
    made = iter(range(1_000_000))

    def new() -> Database:
        folder = tmp_path / f"example-{next(made)}"
        folder.mkdir()
        shutil.copy(sqlite_template, folder / "trainhook.db")
        return Database(
            f"sqlite:///{folder / 'trainhook.db'}",
            drop=lambda: shutil.rmtree(folder, ignore_errors=True),
        )

    return new


# A failing run shrinks its sequence for up to 5 minutes (Hypothesis's own cap) before it
# reports it: more than the suite's default timeout, which would hide the report.
SHRINK_TIMEOUT = pytest.mark.timeout(600)


@SHRINK_TIMEOUT
def test_builds_survive_any_sequence_of_deliveries_crashes_and_restarts_sqlite(
    sqlite_databases: Callable[[], Database],
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_machine(sqlite_databases, make_settings, monkeypatch, examples=30, steps=30)


@SHRINK_TIMEOUT
@pytest.mark.postgres
def test_builds_survive_any_sequence_of_deliveries_crashes_and_restarts_postgres(
    pg_server: Any, make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    def new() -> Database:
        url = new_pg_database(pg_server)
        name = sa.engine.make_url(url).database

        def drop() -> None:
            admin = sa.create_engine(pg_server.url(), isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            admin.dispose()

        def restart_server() -> None:
            pg_server.stop("fast")
            pg_server.resume()

        return Database(url, restart_server=restart_server, drop=drop)

    run_machine(new, make_settings, monkeypatch, examples=8, steps=30)
