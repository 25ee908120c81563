"""The soak machinery, shared by `bench/soak/run.py` (10,000 deliveries) and the short run in
`tests/reliability/test_soak.py`.

Real components only, each in its own process: a throwaway PostgreSQL cluster (so it can be
killed and started again), the official Pub/Sub emulator, `trainhook serve` (the real app
under uvicorn, with the outbox relay and sweeper) and worker processes running the real
worker loop with a fast toy pipeline (`bench.soak.worker`). An asyncio load generator sends
signed GitHub push deliveries at a fixed rate, a share of them redeliveries (same
X-GitHub-Delivery and body), and sends again, like a redelivery from GitHub, any delivery
answered 503 or not answered at all. Meanwhile a chaos thread kills a random worker with
SIGKILL every few seconds (and starts a replacement), restarts the emulator once (all its
topics, subscriptions and messages are lost) and kills PostgreSQL once (`pg_ctl -m
immediate`), starting it again after a few seconds.

Then the system drains (with a time limit) and the promises are checked from the answers,
the database and the training log (see `verify`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from bench.soak.worker import training_key
from service.forges.github import signature
from tests.support.postgres import PostgresServer, find_pg_bin, free_port
from tests.support.pubsub import PubSubEmulator, find_emulator
from trainhook.builds import TERMINAL_BUILD
from trainhook.db import upgrade
from trainhook.models import builds, deliveries, jobs, stage_events

ROOT = Path(__file__).resolve().parents[2]
REPO = "octo-org/social-score-api"
SECRET_ENV = "SOAK_WEBHOOK_SECRET"
SECRET = "soak-secret-0123456789abcdef"
HOOK_ID = "424242"
# 503: database down, nothing stored; 0: no answer within 10 s (GitHub's own timeout). Both
# promise nothing and are sent again; any other code (a 500, a 4xx) is a broken promise.
ALLOWED = {0, 200, 202, 503}


class Missing(RuntimeError):
    """PostgreSQL or the Pub/Sub emulator is not installed on this machine."""


@dataclass
class SoakConfig:
    deliveries: int = 10_000
    redelivery_share: float = 0.2  # of `deliveries`, sent again with the same id and body
    rate: float = 15.0  # deliveries started per second (open loop, capped by `concurrency`)
    concurrency: int = 32  # requests in flight at most
    services: int = 1  # `trainhook serve` processes (deliveries go round-robin)
    workers: int = 4  # worker processes alive at any time (a killed one is replaced)
    train_ms: float = 20.0  # how long the toy `train` stage takes
    branches: int = 64  # refs pushed to (Pub/Sub ordering keys)
    kill_every: float = 5.0  # seconds between two SIGKILLs of a random worker; 0: none
    max_kills: int | None = None  # None: keep killing until the load ends
    emulator_restart_at: float | None = 0.3  # share of the planned load time; None: never
    postgres_restart_at: float | None = 0.6
    postgres_down: float = 3.0  # seconds between killing PostgreSQL and starting it again
    lease_seconds: float = 5.0
    republish_seconds: float = 600.0  # TRAINHOOK_PUBSUB_REPUBLISH_SECONDS (its default)
    retry_for: float = 120.0  # how long a 503 or unanswered delivery is sent again
    drain_timeout: float = 1200.0
    seed: int = 1

    @property
    def planned_seconds(self) -> float:
        return self.deliveries / self.rate


# --- the deliveries -------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    delivery: str
    body: bytes
    headers: dict[str, str]
    redelivery: bool


@dataclass
class Answer:
    codes: list[int] = field(default_factory=list)  # every answer; 0 = no answer (transport)
    status: str | None = None  # the JSON status of the 2xx answer
    build_id: int | None = None
    first_ms: float = 0.0  # latency of the first attempt
    answered_at: float = 0.0  # monotonic time of the final answer

    @property
    def acknowledged(self) -> bool:
        return bool(self.codes) and 200 <= self.codes[-1] < 300


def push(i: int, branches: int) -> tuple[str, bytes, dict[str, str]]:
    """A signed GitHub push of commit number `i`, as a new delivery."""
    sha = f"{i:040x}"
    body = json.dumps(
        {
            "ref": f"refs/heads/b{i % branches}",
            "before": "0" * 40,
            "after": sha,
            "created": False,
            "deleted": False,
            "forced": False,
            "commits": [],
            "head_commit": {"id": sha, "message": f"soak {i}", "author": {"name": "soak"}},
            "repository": {"full_name": REPO, "clone_url": "https://example.invalid/x.git"},
        }
    ).encode()
    delivery = str(uuid.UUID(int=random.Random(i).getrandbits(128), version=4))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/soak",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Hook-ID": HOOK_ID,
        "X-Hub-Signature-256": signature(SECRET, body),
    }
    return delivery, body, headers


def make_plan(cfg: SoakConfig) -> list[Send]:
    """`cfg.deliveries` sends, `redelivery_share` of them redeliveries of an earlier send,
    half of those of a recent one (possibly still in flight: the two race)."""
    rng = random.Random(cfg.seed)
    redeliveries = round(cfg.deliveries * cfg.redelivery_share)
    again = set(rng.sample(range(1, cfg.deliveries), redeliveries))
    plan: list[Send] = []
    originals: list[Send] = []
    for i in range(cfg.deliveries):
        if i in again:
            pool = originals[-20:] if rng.random() < 0.5 else originals
            first = rng.choice(pool)
            plan.append(Send(first.delivery, first.body, first.headers, redelivery=True))
        else:
            delivery, body, headers = push(len(originals), cfg.branches)
            originals.append(Send(delivery, body, headers, redelivery=False))
            plan.append(originals[-1])
    return plan


@dataclass
class Load:
    answers: list[Answer]
    seconds: float  # first send → last answer


async def send_all(plan: list[Send], urls: list[str], cfg: SoakConfig) -> Load:
    """Start one send every 1/rate s (waiting while `concurrency` are in flight); a 503 or
    no answer is sent again after a short pause, to another service, for `retry_for` s."""
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(cfg.concurrency)
    answers = [Answer() for _ in plan]
    limits = httpx.Limits(
        max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency
    )

    async with httpx.AsyncClient(timeout=10.0, limits=limits) as client:

        async def deliver(i: int, send: Send) -> None:
            answer, started, attempt, pause = answers[i], loop.time(), 0, 0.25
            while True:
                if attempt:
                    await slots.acquire()
                url = urls[(i + attempt) % len(urls)] + "/webhooks/github"
                sent = loop.time()
                try:
                    response = await client.post(url, content=send.body, headers=send.headers)
                    code = response.status_code
                except httpx.HTTPError:
                    code = 0
                finally:
                    slots.release()
                if not attempt:
                    answer.first_ms = (loop.time() - sent) * 1000
                answer.codes.append(code)
                attempt += 1
                if 200 <= code < 300:
                    data = response.json()
                    answer.status, answer.build_id = data.get("status"), data.get("build_id")
                    break
                if code not in (0, 503) or loop.time() - started > cfg.retry_for:
                    break
                await asyncio.sleep(pause)
                pause = min(2.0, pause * 2)
            answer.answered_at = loop.time()

        started = loop.time()
        tasks = []
        for i, send in enumerate(plan):
            await asyncio.sleep(max(0.0, started + i / cfg.rate - loop.time()))
            await slots.acquire()
            tasks.append(asyncio.create_task(deliver(i, send)))
        await asyncio.gather(*tasks)
    return Load(answers, max(a.answered_at for a in answers) - started)


# --- the processes --------------------------------------------------------------------------


class SoakPostgres(PostgresServer):
    """A cluster that keeps every commit it acknowledged across `pg_ctl -m immediate`:
    synchronous_commit=on writes the WAL to the kernel before a commit is answered, which a
    killed server keeps (fsync stays off: it guards against power loss, not tested here)."""

    def resume(self) -> None:
        opts = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
            "-c fsync=off -c synchronous_commit=on -c max_connections=300"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "pg.log"), "-w",
                  "start", "-o", opts)  # fmt: skip


@dataclass
class Event:
    at: float  # seconds since the load started
    what: str


class Cluster:
    """PostgreSQL, the emulator, the services and the workers of one soak run."""

    def __init__(self, cfg: SoakConfig, work: Path) -> None:
        launcher, why = find_emulator()
        if launcher is None:
            raise Missing(f"the official Pub/Sub emulator is not installed here: {why}")
        if find_pg_bin() is None:
            raise Missing("PostgreSQL is not installed here (initdb not found)")
        self.cfg = cfg
        self.work = work
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.train_log = work / "trainings.log"
        self.models = work / "models"
        self.pg = SoakPostgres()
        self.emulator = PubSubEmulator(launcher)
        self.services: list[subprocess.Popen[bytes]] = []
        self.urls: list[str] = []
        self.workers: dict[int, subprocess.Popen[bytes]] = {}  # pid -> process
        self.killed: dict[int, float] = {}  # pid -> time.time() of its SIGKILL
        self.died: list[str] = []  # workers or services that exited on their own
        self._dead_services: set[int] = set()
        self.spawned = 0
        self.events: list[Event] = []
        self.t0 = time.monotonic()
        self._lock = threading.Lock()
        self.url = ""
        self.env: dict[str, str] = {}
        self.startup: dict[str, float] = {}  # phase -> seconds since start() began
        self.load_before = os.getloadavg()[0]  # the machine may be shared: say how busy

    # -- start and stop

    def start(self) -> Cluster:
        began = time.monotonic()
        self.pg.start()
        self.emulator.start()
        self.startup["postgres+emulator"] = time.monotonic() - began
        admin = sa.create_engine(self.pg.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql("CREATE DATABASE trainhook")
        admin.dispose()
        self.url = self.pg.url("trainhook") + "?connect_timeout=2"
        upgrade(self.url)
        self.startup["migrated"] = time.monotonic() - began
        config = self.work / "trainhook.toml"
        config.write_text(
            f'[[repos]]\nname = "{REPO}"\nprovider = "github"\n'
            f'clone_url = "https://github.com/{REPO}.git"\nbranches = ["*"]\n'
            f'secret_env = "{SECRET_ENV}"\n'
        )
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "TRAINHOOK_HOME": str(self.work / "home"),
            "TRAINHOOK_CONFIG": str(config),
            "TRAINHOOK_DATABASE_URL": self.url,
            "TRAINHOOK_QUEUE": "pubsub",
            "PUBSUB_EMULATOR_HOST": self.emulator.host,
            "TRAINHOOK_PUBSUB_PROJECT": "trainhook-soak",
            "TRAINHOOK_PUBSUB_TOPIC": "soak-jobs",
            "TRAINHOOK_PUBSUB_SUBSCRIPTION": "soak-work",
            "TRAINHOOK_PUBSUB_PULL_SECONDS": "2",
            "TRAINHOOK_PUBSUB_PUBLISH_TIMEOUT": "3",
            "TRAINHOOK_PUBSUB_SWEEP_SECONDS": "1",
            "TRAINHOOK_PUBSUB_REPUBLISH_SECONDS": str(self.cfg.republish_seconds),
            "TRAINHOOK_LEASE_SECONDS": str(self.cfg.lease_seconds),
            SECRET_ENV: SECRET,
        }
        subprocess.run([sys.executable, "-m", "trainhook.cli", "setup-pubsub"], env=self.env,
                       cwd=ROOT, check=True, capture_output=True)  # fmt: skip
        self.startup["pubsub set up"] = time.monotonic() - began
        for i in range(self.cfg.services):
            port = free_port()
            cmd = [sys.executable, "-m", "trainhook.cli", "serve", "--host", "127.0.0.1",
                   "--port", str(port)]  # fmt: skip
            with (self.logs / f"serve-{i}.log").open("ab") as log:
                self.services.append(
                    subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log, stderr=log)
                )
            self.urls.append(f"http://127.0.0.1:{port}")
        for _ in range(self.cfg.workers):
            self.spawn_worker()
        deadline = time.monotonic() + 60
        for url, proc in zip(self.urls, self.services, strict=True):
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{url} did not start: see {self.logs}")
                time.sleep(0.1)
        self.startup["serving"] = time.monotonic() - began
        self.t0 = time.monotonic()
        return self

    def stop(self) -> None:
        procs = list(self.services) + list(self.workers.values())
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.emulator.stop()
        self.pg.destroy()

    def event(self, what: str) -> None:
        with self._lock:
            self.events.append(Event(time.monotonic() - self.t0, what))

    # -- workers

    def spawn_worker(self) -> int:
        self.spawned += 1
        cmd = [sys.executable, "-m", "bench.soak.worker", str(self.train_log), str(self.models),
               str(self.cfg.train_ms)]  # fmt: skip
        with (self.logs / f"worker-{self.spawned}.log").open("ab") as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log, stderr=log)
        self.workers[proc.pid] = proc
        return proc.pid

    def kill_worker(self, rng: random.Random) -> None:
        pid = rng.choice(sorted(self.workers))
        proc = self.workers.pop(pid)
        proc.send_signal(signal.SIGKILL)
        self.killed[pid] = time.time()
        proc.wait()
        new = self.spawn_worker()
        self.event(f"kill -9 worker {pid}, started {new}")

    def reap(self) -> None:
        """Replace workers that exited on their own (a broken promise: workers retry)."""
        for pid, proc in list(self.workers.items()):
            if proc.poll() is not None:
                del self.workers[pid]
                self.died.append(f"worker {pid} exited with {proc.returncode}")
                self.event(f"worker {pid} exited on its own ({proc.returncode})")
                self.spawn_worker()
        for i, proc in enumerate(self.services):
            if proc.poll() is not None and i not in self._dead_services:
                self._dead_services.add(i)
                self.died.append(f"service {i} exited with {proc.returncode}")

    # -- infrastructure faults

    def restart_emulator(self) -> None:
        self.event("Pub/Sub emulator stopped (topics, subscriptions, messages lost)")
        self.emulator.stop()
        self.emulator.start()
        self.event("Pub/Sub emulator started again, empty")

    def restart_postgres(self) -> None:
        self.event("PostgreSQL killed (pg_ctl -m immediate)")
        self.pg.stop("immediate")
        time.sleep(self.cfg.postgres_down)
        self.pg.resume()
        self.event("PostgreSQL started again")

    # -- the end

    def unfinished(self) -> int:
        engine = sa.create_engine(self.url)
        try:
            with engine.connect() as conn:
                query = sa.select(sa.func.count()).where(builds.c.status.not_in(TERMINAL_BUILD))
                return int(conn.execute(query).scalar_one())
        finally:
            engine.dispose()

    def drain(self, timeout: float) -> tuple[bool, float]:
        """Wait until every build is terminal; (drained, seconds waited)."""
        started = time.monotonic()
        while True:
            self.reap()
            with contextlib.suppress(sa.exc.OperationalError):
                if self.unfinished() == 0:
                    return True, time.monotonic() - started
            if time.monotonic() - started > timeout:
                return False, time.monotonic() - started
            time.sleep(1.0)


class Chaos(threading.Thread):
    """Kills a random worker every `kill_every` s while the load runs; restarts the emulator
    and PostgreSQL once each, at their share of the planned load time."""

    def __init__(self, cluster: Cluster) -> None:
        super().__init__(name="chaos", daemon=True)
        self.cluster = cluster
        self.load_done = threading.Event()
        self.abort = threading.Event()  # the run is ending early: do nothing more
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def _run(self) -> None:
        cfg, cluster = self.cluster.cfg, self.cluster
        rng = random.Random(cfg.seed + 1)
        start = time.monotonic()
        once: list[tuple[float, Callable[[], None]]] = []
        if cfg.emulator_restart_at is not None:
            once.append((cfg.emulator_restart_at * cfg.planned_seconds, cluster.restart_emulator))
        if cfg.postgres_restart_at is not None:
            once.append((cfg.postgres_restart_at * cfg.planned_seconds, cluster.restart_postgres))
        once.sort(key=lambda item: item[0])
        kills = 0
        next_kill = cfg.kill_every
        while (once or not self.load_done.is_set()) and not self.abort.is_set():
            now = time.monotonic() - start
            cluster.reap()
            may_kill = cfg.max_kills is None or kills < cfg.max_kills
            if cfg.kill_every and may_kill and now >= next_kill and not self.load_done.is_set():
                cluster.kill_worker(rng)
                kills += 1
                next_kill += cfg.kill_every
            if once and now >= once[0][0]:
                once.pop(0)[1]()
            time.sleep(0.05)


# --- the verdict ----------------------------------------------------------------------------


@dataclass
class Report:
    lines: list[str]
    broken: list[str]
    figures: dict[str, Any]

    @property
    def ok(self) -> bool:
        return not self.broken

    def text(self) -> str:
        return "\n".join(self.lines)


def verify(
    cfg: SoakConfig,
    plan: list[Send],
    load: Load,
    cluster: Cluster,
    drained: tuple[bool, float],
    wall: float,
) -> Report:
    """Check the promises:
    - every delivery answered 2xx has exactly one build, the one its answers named
      (a redelivery answered `duplicate` makes none);
    - every build is terminal (a dead-lettered job's build is failed);
    - no training key was trained twice. A line in the training log is a finished
      training; a second line for a key is excused only when the worker that wrote the
      first was killed (SIGKILL) after writing it and before storing the model: the rerun
      could not know. Anything else (two workers training one key) is a broken promise;
    - no answer other than 200/202/503, no worker or service exiting on its own.
    """
    broken: list[str] = []
    answers = load.answers
    codes: Counter[int] = Counter(code for a in answers for code in a.codes)
    by_id: dict[str, list[tuple[Send, Answer]]] = {}
    for send, answer in zip(plan, answers, strict=True):
        by_id.setdefault(send.delivery, []).append((send, answer))

    engine = sa.create_engine(cluster.url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(
                sa.select(deliveries.c.delivery_id, builds.c.id, builds.c.status, builds.c.sha)
                .join(builds, builds.c.delivery_id == deliveries.c.id, isouter=True)
                .where(deliveries.c.hook_id == HOOK_ID)
            ).all()
            build_status: dict[str, int] = {
                str(status): int(n)
                for status, n in conn.execute(
                    sa.select(builds.c.status, sa.func.count()).group_by(builds.c.status)
                )
            }
            orphans = conn.execute(
                sa.select(sa.func.count()).where(builds.c.delivery_id.is_(None))
            ).scalar_one()
            job_status: dict[str, int] = {
                str(status): int(n)
                for status, n in conn.execute(
                    sa.select(jobs.c.status, sa.func.count()).group_by(jobs.c.status)
                )
            }
            train_starts = conn.execute(
                sa.select(stage_events.c.build_id, sa.func.count())
                .where(stage_events.c.stage == "train", stage_events.c.status == "running")
                .group_by(stage_events.c.build_id)
            ).all()
            errors = conn.execute(
                sa.select(builds.c.error, sa.func.count())
                .where(builds.c.status == "failed")
                .group_by(builds.c.error)
            ).all()
    finally:
        engine.dispose()

    builds_of: dict[str, list[int]] = {}
    sha_of: dict[int, str] = {}
    status_of: dict[int, str] = {}
    for delivery, build_id, status, sha in stored:
        builds_of.setdefault(delivery, [])
        if build_id is not None:
            builds_of[delivery].append(build_id)
            sha_of[build_id], status_of[build_id] = sha, status

    acked = unacked = stored_unacked = 0
    wrong: list[str] = []
    for delivery, sends in by_id.items():
        named = {a.build_id for _, a in sends if a.acknowledged}
        have = builds_of.get(delivery, [])
        if any(a.acknowledged for _, a in sends):
            acked += 1
            if len(have) != 1 or named != set(have):
                wrong.append(f"{delivery}: answers named {named}, database has {have}")
        else:
            unacked += 1
            stored_unacked += bool(have)
    if wrong:
        broken.append(f"{len(wrong)} acknowledged deliveries without exactly their one build: "
                      + "; ".join(wrong[:5]))  # fmt: skip
    if orphans:
        broken.append(f"{orphans} builds belong to no delivery")

    redeliveries = [a for s, a in zip(plan, answers, strict=True) if s.redelivery]
    re_status = Counter(a.status or "not acknowledged" for a in redeliveries)
    unfinished = sum(n for status, n in build_status.items() if status not in TERMINAL_BUILD)
    if unfinished:
        broken.append(f"{unfinished} builds not terminal {drained[1]:.0f}s after the load")
    odd = {code: n for code, n in codes.items() if code not in ALLOWED}
    if odd:
        broken.append(f"answers other than 200/202/503 or none: {odd}")
    if unacked:
        broken.append(f"{unacked} deliveries never acknowledged within {cfg.retry_for:.0f}s "
                      "of retries")  # fmt: skip
    if cluster.died:
        broken.append("exited on their own: " + "; ".join(cluster.died))

    # Trainings: one line "BUILD KEY PID TIME" per finished training.
    trained: dict[str, list[tuple[int, int, float]]] = {}
    if cluster.train_log.exists():
        for line in cluster.train_log.read_text().splitlines():
            build_id, key, pid, at = line.split()
            trained.setdefault(key, []).append((int(build_id), int(pid), float(at)))
    excused = unexcused = 0
    twice: list[str] = []
    for key, runs in trained.items():
        if len(runs) == 1:
            continue
        storer = int((cluster.models / key).read_text()) if (cluster.models / key).exists() else 0
        ok = sum(
            1 for _, pid, at in runs
            if pid in cluster.killed and cluster.killed[pid] >= at and pid != storer
        )  # fmt: skip
        extra = len(runs) - 1
        excused += min(ok, extra)
        if extra > ok:
            unexcused += extra - ok
            twice.append(f"{key} (builds/pids {[(b, p) for b, p, _ in runs]})")
    if twice:
        broken.append(f"{len(twice)} training keys trained twice: " + "; ".join(twice[:5]))
    succeeded = [b for b, status in status_of.items() if status == "succeeded"]
    untrained = [b for b in succeeded if training_key(sha_of[b]) not in trained]
    if untrained:
        broken.append(f"{len(untrained)} builds succeeded with no training: {untrained[:5]}")
    reruns = sum(1 for _, n in train_starts if n > 1)

    latencies = sorted(a.first_ms for a in answers)
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    rate = len(plan) / load.seconds
    figures = {
        "deliveries": len(plan),
        "unique": len(by_id),
        "redeliveries": len(redeliveries),
        "acknowledged": acked,
        "builds": sum(build_status.values()),
        "rate": round(rate, 1),
        "builds_per_s": round(sum(build_status.values()) / (load.seconds + drained[1]), 1),
        "target_rate": cfg.rate,
        "load_seconds": round(load.seconds, 1),
        "drain_seconds": round(drained[1], 1),
        "wall_seconds": round(wall, 1),
        "kills": sum(1 for e in cluster.events if e.what.startswith("kill -9")),
        "trainings": sum(len(r) for r in trained.values()),
        "keys": len(trained),
        "excused": excused,
        "unexcused": unexcused,
        "codes": dict(sorted(codes.items())),
    }
    lines = [
        f"soak: {len(plan)} deliveries ({len(by_id)} distinct, {len(redeliveries)} redeliveries),"
        f" {cfg.services} service(s), {cfg.workers} workers, train {cfg.train_ms:g} ms,"
        f" {os.cpu_count()} CPUs, load average {cluster.load_before:.1f} before the run",
        f"rate held: {rate:.1f} deliveries/s (target {cfg.rate:g}/s) over {load.seconds:.1f}s;"
        f" first-attempt latency p50 {p50:.0f} ms, p99 {p99:.0f} ms; end to end"
        f" {figures['builds_per_s']} builds/s (first send to last build finished)",
        "answers by code (every attempt; 0 = no answer): "
        + ", ".join(f"{code}: {n}" for code, n in sorted(codes.items())),
        f"acknowledged (2xx): {acked} distinct deliveries; not acknowledged: {unacked}"
        f" (stored anyway: {stored_unacked})",
        "redeliveries answered: " + ", ".join(f"{k}: {n}" for k, n in sorted(re_status.items())),
        f"builds: {sum(build_status.values())} "
        + str(dict(sorted(build_status.items())))
        + f"; jobs: {dict(sorted(job_status.items()))}; builds with no delivery: {orphans}",
        f"acknowledged deliveries with exactly one build: {acked - len(wrong)}/{acked}",
        f"trainings finished: {figures['trainings']} for {len(trained)} keys; keys trained"
        f" twice: {unexcused} (plus {excused} excused: trainer killed after training, before"
        f" storing the model); builds whose train stage started more than once: {reruns}",
        f"drain: {'all terminal' if drained[0] else 'NOT all terminal'} {drained[1]:.1f}s after"
        f" the load; wall time {wall:.1f}s",
        f"chaos: {figures['kills']} workers killed with SIGKILL; "
        + "; ".join(f"{e.at:.1f}s {e.what}" for e in cluster.events if "kill -9" not in e.what),
    ]
    if errors:
        lines.append("failed builds by error: " + "; ".join(f"{n} × {e}" for e, n in errors))
    evidence = log_evidence(cluster.logs)
    figures["logs"] = evidence
    figures["events"] = [e.what for e in cluster.events if "kill -9" not in e.what]
    lines.append(
        "recovery seen in the logs: " + ", ".join(f"{k}: {n}" for k, n in evidence.items())
    )
    lines.append("PROMISES KEPT" if not broken else "PROMISES BROKEN:\n  " + "\n  ".join(broken))
    return Report(lines, broken, figures)


def log_evidence(logs: Path) -> dict[str, int]:
    """How often the logs of the services and workers show each recovery step."""
    marks = {
        "resources recreated": "was missing: created it",
        "jobs re-owed after a new subscription": "unfinished job(s) published again",
        "stale jobs republished": "taken as lost and published again",
        "Tracebacks": "Traceback",
    }
    text = "".join(p.read_text(errors="replace") for p in sorted(logs.glob("*.log")))
    return {name: text.count(mark) for name, mark in marks.items()}


def run_soak(cfg: SoakConfig, work: Path, say: Callable[[str], None] = print) -> Report:
    """One soak run in `work` (logs, training log and models stay there); raises Missing
    when PostgreSQL or the emulator is not installed."""
    began = time.monotonic()
    cluster = Cluster(cfg, work)
    plan = make_plan(cfg)
    chaos = Chaos(cluster)
    try:
        cluster.start()
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in cluster.startup.items())
        say(f"started in {time.monotonic() - began:.1f}s ({phases}): PostgreSQL on "
            f"{cluster.pg.port}, emulator on {cluster.emulator.host}, {cfg.services} service(s), "
            f"{cfg.workers} workers; sending {len(plan)} deliveries at {cfg.rate:g}/s")  # fmt: skip
        chaos.start()
        load = asyncio.run(send_all(plan, cluster.urls, cfg))
        say(f"load done in {load.seconds:.1f}s; waiting for the chaos events and the drain")
        chaos.load_done.set()
        chaos.join()
        if chaos.error is not None:
            raise RuntimeError("the chaos loop failed") from chaos.error
        drained = cluster.drain(cfg.drain_timeout)
        return verify(cfg, plan, load, cluster, drained, time.monotonic() - began)
    finally:
        chaos.abort.set()  # no worker started after the stop below has listed them
        if chaos.is_alive():
            chaos.join(timeout=60)
        cluster.stop()
