"""Repository code runs in a sandbox (worker/sandbox.py): what a commit's tests, install or
model files can do to the worker, its secrets and state, and to the receiver in the same
`trainhook up` process. Each attack also runs unsandboxed (`sandbox = false`, or the
health check's old invocation) as the control that shows it is real and what the sandbox
stops; the two that would endanger the machine running the suite unsandboxed (`kill -9 -1`,
filling the disk) have bounded controls instead, named where they are."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import pytest
import sqlalchemy as sa
from nltk.tokenize.casual import TweetTokenizer
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression

from tests.conftest import REPO_ROOT, SECRET
from tests.service.github_payloads import push_payload, signed
from tests.support.gitrepo import GitRepo
from tests.support.postgres import free_port
from tests.support.required import unavailable
from tests.worker.conftest import context_for, logs, new_build
from trainhook.buildview import get_build, get_logs
from trainhook.db import make_engine, reading
from trainhook.errors import ConfigError
from trainhook.settings import Settings
from worker import sandbox
from worker.checkout import checkout_stage
from worker.local.builder import LocalBuilder
from worker.stage import StageFailed
from worker.testcommand import repo_tests_stage


@pytest.fixture(autouse=True)
def working_sandbox() -> None:
    problem = sandbox.sandbox_problem()
    if problem is not None:
        unavailable("SANDBOX", f"no sandbox here: {problem}")


MODES = ["sandboxed", "unsandboxed-control"]
API_TOKEN = "sandbox-api-token-0123456789"


@dataclass
class StageRun:
    status: str
    detail: str
    log: str
    settings: Settings
    source: Path


@pytest.fixture
def origin(tmp_path: Path) -> GitRepo:
    return GitRepo(tmp_path / "origin")


@pytest.fixture
def run_stage(
    origin: GitRepo, make_settings: Callable[..., Settings], sqlite_url: str, sqlite_engine: Any
) -> Callable[..., StageRun]:
    """Commit `files`, check out and run the test stage with `command`."""

    def run(
        files: dict[str, str | bytes],
        command: str,
        mode: str = "sandboxed",
        extra: str = "",
        env: dict[str, str] | None = None,
    ) -> StageRun:
        sha = origin.commit(files)
        keys = f'test_command = "{command}"\n{extra}'
        if mode != "sandboxed":
            keys += "\nsandbox = false\n"
        settings = make_settings(sqlite_url, clone_url=origin.url, extra=keys, env=env)
        ctx = context_for(settings, sqlite_engine, new_build(sqlite_engine, sha))
        checkout_stage(ctx)
        try:
            detail, status = repo_tests_stage(ctx).detail or "", "succeeded"
        except StageFailed as exc:
            detail, status = str(exc), "failed"
        log = logs(sqlite_engine, ctx.build.id).get("test", "")
        ctx.cleanup.close()
        return StageRun(status, detail, log, settings, ctx.need_source())

    return run


# ---- state: $TRAINHOOK_HOME, the checkout the later stages read -------------------------

HOME_ATTACK = """
import os, sys
home = sys.argv[1]
try:
    print("LISTED", sorted(os.listdir(home)))
    open(os.path.join(home, "planted"), "w").write("x")
    print("PLANTED")
except OSError as exc:
    print("BLOCKED", type(exc).__name__)
open("data.csv", "w").write("poisoned\\n")  # the private copy only
"""


@pytest.mark.parametrize("mode", MODES)
def test_repository_tests_cannot_read_or_write_trainhook_home_or_the_export(
    mode: str, run_stage: Callable[..., StageRun], make_settings: Callable[..., Settings]
):
    home = make_settings().home
    home.mkdir(parents=True, exist_ok=True)
    (home / "trainhook.db").write_text("every raw delivery")

    run = run_stage(
        {"attack.py": HOME_ATTACK, "data.csv": "text\n"}, f"python attack.py {home}", mode
    )

    assert run.status == "succeeded", run.detail
    assert (run.source / "data.csv").read_text() == "text\n"  # the export is never written
    if mode == "sandboxed":
        assert "BLOCKED" in run.log and "trainhook.db" not in run.log
        assert not (home / "planted").exists()
        assert "UNSANDBOXED" not in run.detail
    else:  # the control: the worker's own user reads and writes its state
        assert "trainhook.db" in run.log and (home / "planted").exists()
        assert "UNSANDBOXED (sandbox = false)" in run.detail


# ---- the network: off unless the repository opts in ---------------------------------------

NET_ATTACK = """
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3).close()
    print("CONNECTED")
except OSError as exc:
    print("NO NETWORK", type(exc).__name__)
"""


@contextlib.contextmanager
def listener() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                server.accept()[0].close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        server.close()


@pytest.mark.parametrize("mode", ["sandboxed", "sandbox_network", "unsandboxed-control"])
def test_network_is_off_by_default_and_on_when_the_repository_opts_in(
    mode: str, run_stage: Callable[..., StageRun]
):
    extra = "sandbox_network = true" if mode == "sandbox_network" else ""
    with listener() as port:
        run = run_stage(
            {"net.py": NET_ATTACK},
            f"python net.py {port}",
            mode.replace("sandbox_network", "sandboxed"),
            extra,
        )
    assert run.status == "succeeded", run.detail
    if mode == "sandboxed":
        assert "NO NETWORK" in run.log and "CONNECTED" not in run.log
    else:
        assert "CONNECTED" in run.log
    if mode == "sandbox_network":
        assert "network on (sandbox_network = true)" in run.detail


# ---- limits: memory, processes, disk (bounded controls: they show no limit applies) -------

MEMORY_HOG = """
try:
    block = bytearray(512 * 1024 * 1024)
    print("ALLOCATED", len(block))
except MemoryError:
    print("MEMORY LIMITED")
"""

FORK_HOG = """
import subprocess
started = []
try:
    for _ in range(48):
        started.append(subprocess.Popen(["sleep", "30"]))
    print("STARTED", len(started))
except OSError as exc:
    print("PROCESSES LIMITED after", len(started), type(exc).__name__)
"""

DISK_HOG = """
import errno
written = 0
try:
    with open("fill.bin", "wb") as out:
        for _ in range(128):
            out.write(b"x" * 1024 * 1024)
            out.flush()
            written += 1
    print("WROTE MiB", written)
except OSError as exc:
    print("DISK LIMITED after MiB", written, errno.errorcode.get(exc.errno))
"""

LIMITS = {
    "TRAINHOOK_SANDBOX_MEMORY": "256M",
    "TRAINHOOK_SANDBOX_PROCESSES": "24",
    "TRAINHOOK_SANDBOX_DISK": "32M",
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "hog,limited,unlimited",
    [
        (MEMORY_HOG, "MEMORY LIMITED", "ALLOCATED"),
        (FORK_HOG, "PROCESSES LIMITED", "STARTED 48"),
        (DISK_HOG, "DISK LIMITED", "WROTE MiB 128"),
    ],
    ids=["memory", "processes", "disk"],
)
def test_memory_processes_and_disk_are_limited(
    mode: str, hog: str, limited: str, unlimited: str, run_stage: Callable[..., StageRun]
):
    run = run_stage({"hog.py": hog}, "python hog.py", mode, env=LIMITS)

    assert run.status == "succeeded", run.detail
    assert (limited if mode == "sandboxed" else unlimited) in run.log, run.log


# ---- refusing to run unsandboxed --------------------------------------------------------


def test_without_bubblewrap_the_test_stage_refuses_and_says_how_to_fix_it(
    run_stage: Callable[..., StageRun], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(sandbox, "find_bwrap", lambda: None)
    sandbox.sandbox_problem.cache_clear()
    try:
        refused = run_stage({"ok.py": "print('ran')"}, "python ok.py")
        opted_out = run_stage({"ok.py": "print('ran')"}, "python ok.py", "unsandboxed")
    finally:
        sandbox.sandbox_problem.cache_clear()

    assert refused.status == "failed" and "ran" not in refused.log
    assert "bubblewrap (bwrap) is not installed" in refused.detail
    assert "apt-get install bubblewrap" in refused.detail
    assert "sandbox = false" in refused.detail
    assert opted_out.status == "succeeded" and "UNSANDBOXED (sandbox = false)" in opted_out.detail


def test_bad_sandbox_settings_and_keys_are_errors_naming_them(
    tmp_path: Path, make_settings: Callable[..., Settings]
):
    for name, bad in [
        ("TRAINHOOK_SANDBOX_MEMORY", "lots"),
        ("TRAINHOOK_SANDBOX_MEMORY", "1K"),
        ("TRAINHOOK_SANDBOX_PROCESSES", "2.5"),
        ("TRAINHOOK_SANDBOX_DISK", "-1"),
    ]:
        with pytest.raises(ConfigError, match=name):
            make_settings(env={name: bad})
    for key, message in [
        ('sandbox_env = { GITHUB_TOKEN = "x" }', "looks like a secret"),
        ('sandbox_env = { PATH = "/x" }', "set by the sandbox"),
        ('sandbox_env = { "A B" = "x" }', "not an environment variable name"),
        ('sandbox_limits = { memory = "huge" }', "not a size"),
        ("sandbox_limits = { swap = 1 }", "unknown limit"),
        ('sandbox = "no"', "wrong type"),
    ]:
        with pytest.raises(ConfigError, match=message) as failure:
            make_settings(extra=key)
        assert key.split(" ")[0] in str(failure.value)
    ok = make_settings(
        extra='sandbox_env = { MODE = "ci" }\nsandbox_limits = { memory = "1G", processes = 64 }',
        env={"TRAINHOOK_SANDBOX_DISK": "512M"},
    )
    assert ok.repos[0].sandbox_env == (("MODE", "ci"),)
    assert dict(ok.repos[0].sandbox_limits) == {"memory": 1024**3, "processes": 64}
    assert ok.sandbox_limits.disk == 512 * 1024**2


# ---- the health check never imports from the checkout ------------------------------------

# Unpickling a vectorizer that uses NLTK imports nltk, which tries `import bllipparser`
# (and scikit-learn tries pandas): a file of that name in the checkout answers.
PLANTED = 'print("PLANTED CODE RAN: {name}", flush=True)\n'


def nltk_model(folder: Path) -> Path:
    folder.mkdir(parents=True)
    texts = ["love it", "great stuff", "hate it", "awful thing"]
    vectorizer = CountVectorizer(tokenizer=TweetTokenizer().tokenize, token_pattern=None)
    features = vectorizer.fit_transform(texts)
    model = LogisticRegression().fit(features, ["pos", "pos", "neg", "neg"])
    joblib.dump(model, folder / "model.joblib")
    joblib.dump(vectorizer, folder / "vectorizer.joblib")
    (folder / "metrics.json").write_text(json.dumps({"macro_f1": 0.8}))
    return folder


def test_the_health_check_never_runs_code_committed_beside_the_model(
    make_settings: Callable[..., Settings], sqlite_url: str, sqlite_engine: Any, tmp_path: Path
):
    settings = make_settings(sqlite_url)
    ctx = context_for(settings, sqlite_engine, new_build(sqlite_engine, "5" * 40))
    ctx.source = tmp_path / "checkout"
    ctx.source.mkdir()
    for name in ("bllipparser", "pandas"):
        (ctx.source / f"{name}.py").write_text(PLANTED.format(name=name))
    ctx.model_dir = nltk_model(tmp_path / "model")

    LocalBuilder()(ctx)

    assert dict(ctx.recorder.done)["deploy"] == "succeeded"
    release = settings.home / "releases" / ctx.repo.slug / "current"
    assert (release / "bllipparser.py").is_file()  # it was in the release...
    assert "PLANTED CODE RAN" not in logs(sqlite_engine, ctx.build.id).get("deploy", "")
    # ...and the control: the health check as it was (the release appended to sys.path)
    # runs it.
    old = (
        "import sys; from pathlib import Path; sys.path.append(sys.argv[1]);"
        "from worker.local.healthcheck import check; print(check(Path(sys.argv[1])))"
    )
    ran = subprocess.run(
        [sys.executable, "-P", "-c", old, str(release)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "PLANTED CODE RAN: bllipparser" in ran.stdout, ran.stdout + ran.stderr


# ---- `trainhook up`: secrets, the receiver's life, nothing outliving the stage ------------


@dataclass
class Up:
    proc: subprocess.Popen[bytes]
    port: int
    engine: sa.Engine
    origin: GitRepo

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    def push(self, sha: str) -> int:
        body, headers = signed(push_payload(after=sha))
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/webhooks/github", data=body, headers=headers
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)

    def build(self, build_id: int, timeout: float = 60) -> dict[str, Any] | None:
        """The build once it has finished; None if `up` died first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with reading(self.engine) as conn:
                view = get_build(conn, build_id)
            if view is not None and view["status"] in ("succeeded", "failed"):
                return view
            if self.proc.poll() is not None:
                return None
            time.sleep(0.2)
        raise AssertionError(f"build {build_id} did not finish in {timeout}s")

    def log(self, build_id: int) -> str:
        with reading(self.engine) as conn:
            return json.dumps(get_logs(conn, build_id))


@pytest.fixture
def start_up(
    tmp_path: Path, sqlite_url: str, make_settings: Callable[..., Settings]
) -> Iterator[Callable[..., Up]]:
    """`trainhook up` in its own process, with the secrets in its environment as deployed."""
    started: list[Up] = []

    def start(mode: str, extra_env: dict[str, str] | None = None) -> Up:
        origin = GitRepo(tmp_path / f"origin-{len(started)}")
        keys = 'test_command = "python attack.py"\n'
        if mode != "sandboxed":
            keys += "sandbox = false\n"
        settings = make_settings(sqlite_url, clone_url=origin.url, extra=keys)
        port = free_port()
        env = {
            **os.environ,
            "TRAINHOOK_HOME": str(settings.home),
            "TRAINHOOK_CONFIG": str(settings.config_path),
            "TRAINHOOK_DATABASE_URL": sqlite_url,
            "TEST_WEBHOOK_SECRET": SECRET,
            "TRAINHOOK_API_TOKEN": API_TOKEN,
            "TRAINHOOK_TEST_TIMEOUT": "60",
            **(extra_env or {}),
        }
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trainhook.cli",
                "up",
                "--host",
                "127.0.0.1",
                "--port",
                f"{port}",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        up = Up(proc, port, make_engine(sqlite_url), origin)
        started.append(up)
        deadline = time.monotonic() + 30
        while not up.alive():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("trainhook up did not start")
            time.sleep(0.1)
        return up

    yield start
    for up in started:
        if up.proc.poll() is None:
            up.proc.terminate()
            try:
                up.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                up.proc.kill()
                up.proc.wait()
        up.engine.dispose()


def push_attack(up: Up, script: str) -> int:
    """Commit `script` as attack.py, push it, return the build id."""
    sha = up.origin.commit({"attack.py": script, "data/train.csv": "text,label\nx,pos\n"})
    assert up.push(sha) == 202
    with reading(up.engine) as conn:
        return int(conn.exec_driver_sql("SELECT max(id) FROM builds").scalar_one())


ENV_ATTACK = """
import os
for pid in [os.getppid(), 1] + [int(p) for p in os.listdir("/proc") if p.isdigit()]:
    try:
        print("ENVIRON", pid, open(f"/proc/{pid}/environ", "rb").read().replace(b"\\0", b" "))
    except OSError as exc:
        print("DENIED", pid, type(exc).__name__)
raise SystemExit(1)
"""


@pytest.mark.parametrize("mode", MODES)
def test_repository_tests_cannot_read_the_workers_environment(mode: str, start_up):
    up = start_up(mode)

    build = up.build(push_attack(up, ENV_ATTACK))

    assert build is not None and build["status"] == "failed"
    shown = up.log(build["id"]) + json.dumps(build, default=str)
    assert "ENVIRON" in shown or "DENIED" in shown  # the attack ran
    leaked = SECRET in shown or API_TOKEN in shown
    assert leaked is (mode != "sandboxed")


KILL_PARENT = """
import os, signal, sys
os.kill(os.getppid(), signal.SIGKILL)
if sys.argv[1:] == ["everything"]:
    os.kill(-1, signal.SIGKILL)  # kill -9 -1: every process this user may signal
raise SystemExit(1)
"""


@pytest.mark.parametrize("mode", MODES)
def test_a_test_killing_its_parent_never_takes_the_receiver_down(mode: str, start_up):
    # `kill -9 -1` is tried only in the sandbox: unsandboxed, as the suite's user, it would
    # kill the suite and everything else that user runs. The control kills its parent only.
    script = KILL_PARENT.replace("sys.argv[1:]", '["everything"]' if mode == "sandboxed" else "[]")
    up = start_up(mode)

    build = up.build(push_attack(up, script))

    if mode == "sandboxed":
        assert build is not None and build["status"] == "failed"
        assert up.alive()
        assert up.push(up.origin.commit({"next.txt": "1"})) == 202  # the receiver still works
    else:
        assert build is None  # `up` died with its receiver and status page
        assert up.proc.wait(timeout=10) == -signal.SIGKILL


def marked_processes(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


# The test ends only once the daemon runs `sleep <marker>`: the pipe's write end is closed on
# exec, so the read returns then (and not before), and a daemon that escaped is always found.
DAEMON = """
import os
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", "{seconds}"])
    os._exit(0)
os.close(w)
os.read(r, 1)
print("daemon started")
raise SystemExit(1)
"""


@pytest.mark.parametrize("mode", MODES)
def test_daemons_started_by_tests_never_outlive_the_stage(mode: str, start_up):
    seconds = f"{300 + uuid.uuid4().int % 1000}.{os.getpid()}"  # a unique command line
    up = start_up(mode)

    build = up.build(push_attack(up, DAEMON.format(seconds=seconds)))

    assert build is not None and build["status"] == "failed"
    left = marked_processes(seconds)
    deadline = time.monotonic() + 10
    while mode == "sandboxed" and left and time.monotonic() < deadline:
        time.sleep(0.05)  # the stage's processes may still be being killed: wait for it
        left = marked_processes(seconds)
    for pid in left:  # the control's daemon: end it
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if mode == "sandboxed":
        assert left == []
    else:  # setsid escapes the process group the stage kills
        assert left != []


HOGS = """
import os
def fill(path):
    try:
        with open(path, "wb") as out:
            while True:
                out.write(b"x" * (1 << 20))
    except OSError as exc:
        print("full", path, exc.errno)
fill("fill.bin")
fill("/tmp/fill.bin")
blocks = []
try:
    while True:
        blocks.append(bytearray(64 << 20))
except MemoryError:
    print("memory refused after MiB", 64 * len(blocks))
raise SystemExit(1)
"""


def test_disk_and_memory_hogs_never_take_the_receiver_down(start_up):
    # Sandboxed only: unsandboxed, these would fill the suite machine's disk and memory (the
    # bounded controls are in test_memory_processes_and_disk_are_limited).
    up = start_up("sandboxed", {"TRAINHOOK_SANDBOX_DISK": "64M", "TRAINHOOK_SANDBOX_MEMORY": "1G"})

    build = up.build(push_attack(up, HOGS))

    assert build is not None and build["status"] == "failed"
    log = up.log(build["id"])
    assert "full fill.bin" in log and "memory refused after MiB" in log
    assert up.alive()
    assert up.push(up.origin.commit({"next.txt": "1"})) == 202


LOOK = """
import os
print(open("{shared}").read())
try:
    print(os.listdir("{home}"))
except OSError:
    print("HOME HIDDEN")
"""


def test_trainhook_home_stays_hidden_inside_a_path_the_operator_shares(
    run_stage: Callable[..., StageRun], make_settings: Callable[..., Settings]
):
    home = make_settings().home
    home.mkdir(parents=True, exist_ok=True)
    (home / "trainhook.db").write_text("every raw delivery")
    (home.parent / "wheelhouse.txt").write_text("shared")
    home.parent.chmod(0o755)  # readable by the sandbox's user, as a shared path must be
    shared = {"TRAINHOOK_SANDBOX_PATHS": str(home.parent)}  # the parent of $TRAINHOOK_HOME

    run = run_stage(
        {"look.py": LOOK.format(shared=home.parent / "wheelhouse.txt", home=home)},
        "python look.py",
        env=shared,
    )

    assert "shared" in run.log  # the operator's path is there...
    assert "HOME HIDDEN" in run.log and "trainhook.db" not in run.log  # ...its home is not
