"""worker/sandbox.py and worker/repocode.py one rule at a time: each test runs a command in a
real bubblewrap sandbox (about 35 ms) and checks what repository code would see or be denied
there. tests/reliability/test_security_sandbox.py has the attacks through whole stages."""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from tests.support.required import unavailable
from trainhook.sandboxsettings import SandboxLimits
from trainhook.settings import Settings
from worker import repocode, sandbox
from worker.commands import CommandResult
from worker.context import BuildContext
from worker.sandbox import (
    HOME,
    INSTALL_HINT,
    ROOT,
    SANDBOX_UID,
    SOURCE,
    WORKDIR,
    Sandbox,
    SandboxSpec,
    Unsandboxed,
)
from worker.stage import StageFailed

MIB = 1024**2
LIMITS = SandboxLimits(memory=700 * MIB, cpu_seconds=77, processes=61, disk=16 * MIB)
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox drops to nobody as root")


@pytest.fixture
def working_sandbox() -> None:
    problem = sandbox.sandbox_problem()
    if problem is not None:
        unavailable("SANDBOX", f"no sandbox here: {problem}")


@pytest.fixture
def fresh_probe() -> Iterator[None]:
    """sandbox_problem() is cached per process: clear it around a test that fakes the host."""
    sandbox.sandbox_problem.cache_clear()
    yield
    sandbox.sandbox_problem.cache_clear()


def run(spec: SandboxSpec, script: str, timeout: float = 60) -> CommandResult:
    return Sandbox(spec).run(["/bin/sh", "-c", script], timeout=timeout)


def lines_of(result: CommandResult) -> list[str]:
    assert result.ok, result.tail
    return result.tail.splitlines()


def spec(**fields: Any) -> SandboxSpec:
    return SandboxSpec(limits=fields.pop("limits", LIMITS), **fields)


# ---- what the command sees -------------------------------------------------------------


@pytest.mark.usefixtures("working_sandbox")
def test_the_command_sees_only_the_sandboxs_variables_and_the_callers(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("TRAINHOOK_WORKER_ONLY", "worker secret")
    result = run(spec(env={"MODE": "ci", "LANG": "en_US.UTF-8"}), "env")

    env = dict(line.split("=", 1) for line in lines_of(result))
    env.pop("PWD", None), env.pop("OLDPWD", None), env.pop("SHLVL", None)  # the shell's own
    assert env == {
        "PATH": ":".join(sandbox.default_path()),
        "HOME": HOME,
        "TMPDIR": f"{ROOT}/tmp",
        "LANG": "en_US.UTF-8",  # the caller's variables win
        "PYTHONUNBUFFERED": "1",
        "MODE": "ci",
    }


@pytest.mark.usefixtures("working_sandbox")
def test_path_is_the_one_the_spec_names_when_it_names_one():
    result = run(spec(path=("/usr/bin", "/bin")), 'echo "$PATH"')

    assert lines_of(result) == ["/usr/bin:/bin"]


def test_the_default_path_starts_with_the_workers_python():
    assert sandbox.default_path() == (
        str(Path(sys.executable).parent),
        "/usr/local/bin",
        "/usr/bin",
        "/bin",
    )


@ROOT_ONLY
@pytest.mark.usefixtures("working_sandbox")
def test_as_root_the_command_runs_as_nobody_without_capabilities_or_new_privileges():
    result = run(spec(), "grep -E '^(Uid|Gid|Groups|Cap[A-Za-z]+|NoNewPrivs):' /proc/self/status")

    status = {k: v.split() for k, v in (line.split(":", 1) for line in lines_of(result))}
    assert status["Uid"] == [str(SANDBOX_UID)] * 4 and status["Gid"] == [str(SANDBOX_UID)] * 4
    assert status["Groups"] == []
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert status[cap] == ["0000000000000000"], cap
    assert status["NoNewPrivs"] == ["1"]


@pytest.mark.usefixtures("working_sandbox")
def test_the_command_has_its_own_namespaces_and_no_network_unless_the_spec_asks():
    names = ("pid", "ipc", "uts", "net", "mnt", "cgroup")
    script = "; ".join(f"readlink /proc/self/ns/{n}" for n in names) + "; cat /proc/net/dev"
    host = {n: os.readlink(f"/proc/self/ns/{n}") for n in names}

    closed = lines_of(run(spec(), script))
    opened = lines_of(run(spec(network=True), script))

    assert all(seen != host[n] for n, seen in zip(names, closed[: len(names)], strict=True))
    assert opened[names.index("net")] == host["net"]  # network on: the host's
    devices = [line.split(":")[0].strip() for line in closed[len(names) + 2 :]]
    assert devices == ["lo"]


@pytest.mark.usefixtures("working_sandbox")
def test_the_commands_processes_are_the_only_ones_it_sees():
    result = run(spec(), "ls /proc | grep -c '^[0-9]'; echo $$")

    count, pid = lines_of(result)
    assert int(count) <= 4 and int(pid) <= 4  # bwrap's init, the shell, ls, grep


@pytest.mark.usefixtures("working_sandbox")
def test_only_the_listed_etc_files_and_system_directories_are_there():
    result = run(spec(), "ls -A /etc; echo --; ls -A /")

    listed = lines_of(result)
    etc, top = listed[: listed.index("--")], listed[listed.index("--") + 1 :]
    assert etc == sorted(e for e in sandbox.ETC_ENTRIES if os.path.lexists(f"/etc/{e}"))
    system = [d for d in sandbox.SYSTEM_DIRS if os.path.lexists(f"/{d}")]
    assert sorted(top) == sorted([*system, "dev", "etc", "proc", ROOT.strip("/"), "tmp"])


@pytest.mark.usefixtures("working_sandbox")
def test_system_directories_are_the_hosts_read_only_and_links_stay_links():
    script = "".join(
        f"echo {d} $(readlink /{d} || echo dir); "
        for d in sandbox.SYSTEM_DIRS
        if Path(f"/{d}").exists()
    )
    result = run(spec(), script + "touch /usr/planted 2>/dev/null && echo WROTE || echo READONLY")

    for line in lines_of(result)[:-1]:
        name, seen = line.split(" ", 1)
        host = Path(f"/{name}")
        assert seen == (os.readlink(host) if host.is_symlink() else "dir"), name
    assert lines_of(result)[-1] == "READONLY"


@pytest.mark.usefixtures("working_sandbox")
def test_limits_apply_to_every_process_and_the_oom_killer_picks_the_sandbox_first():
    result = run(spec(), "cat /proc/self/oom_score_adj; cat /proc/self/limits")

    adj, *limits = lines_of(result)
    assert adj == "1000"

    def limit(name: str) -> list[str]:
        line = next(line for line in limits if line.startswith(name))
        return re.split(r"\s{2,}", line.strip())[1:3]  # soft, hard

    assert limit("Max address space") == [str(LIMITS.memory)] * 2
    assert limit("Max cpu time") == [str(LIMITS.cpu_seconds)] * 2
    assert limit("Max processes") == [str(LIMITS.processes)] * 2
    assert limit("Max file size") == [str(LIMITS.disk)] * 2
    assert limit("Max core file size") == ["0"] * 2


# ---- the checkout, the working directory, $HOME and /tmp ---------------------------------


def checkout_in(tmp_path: Path) -> Path:
    checkout = tmp_path / "checkout"
    (checkout / "pkg").mkdir(parents=True)
    (checkout / "data.csv").write_text("text\n")
    (checkout / "pkg" / "mod.py").write_text("X = 1\n")
    return checkout


@pytest.mark.usefixtures("working_sandbox")
def test_the_checkout_is_copied_into_a_writable_working_directory_and_never_written(
    tmp_path: Path,
):
    checkout = checkout_in(tmp_path)
    script = (
        "pwd; cat data.csv pkg/mod.py; echo poisoned > data.csv && echo rm pkg/mod.py; "
        "touch new pkg/new && echo WROTE; cat data.csv; "
        f"touch {SOURCE}/planted 2>/dev/null && echo SOURCE WRITTEN || echo SOURCE READONLY"
    )
    result = run(spec(checkout=checkout), script)

    assert lines_of(result) == [
        WORKDIR,
        "text",
        "X = 1",
        "rm pkg/mod.py",
        "WROTE",
        "poisoned",
        "SOURCE READONLY",
    ]
    assert (checkout / "data.csv").read_text() == "text\n"
    assert sorted(p.name for p in checkout.rglob("*")) == ["data.csv", "mod.py", "pkg"]


@pytest.mark.usefixtures("working_sandbox")
def test_a_checkout_larger_than_the_sandbox_disk_fails_saying_which_setting_to_raise(
    tmp_path: Path,
):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "big.bin").write_bytes(b"x" * (3 * MIB))
    small = SandboxLimits(memory=700 * MIB, disk=2 * MIB)

    result = run(spec(checkout=checkout, limits=small), "echo RAN")

    assert result.returncode == sandbox.SETUP_FAILED and "RAN" not in result.tail
    assert (
        "sandbox: copying the checkout failed: does it fit in the sandbox disk (2M)? "
        "Raise TRAINHOOK_SANDBOX_DISK or the repository's sandbox_limits." in result.tail
    )


@ROOT_ONLY
@pytest.mark.usefixtures("working_sandbox")
def test_home_and_tmp_belong_to_the_command_and_share_one_size_limited_disk():
    script = (
        'cd "$HOME" && touch h && cd /tmp && touch t && echo WROTE; '
        f'stat -c "%n %u %a" {ROOT} {ROOT}/tmp "$HOME"; readlink /tmp; '
        "head -c 9000000 /dev/zero > /tmp/a && echo FIRST; "
        'head -c 9000000 /dev/zero > "$HOME/b" 2>/dev/null && echo SECOND || echo FULL'
    )
    result = run(spec(), script)

    assert lines_of(result) == [
        "WROTE",
        f"{ROOT} {SANDBOX_UID} 755",
        f"{ROOT}/tmp 0 1777",
        f"{HOME} {SANDBOX_UID} 755",
        "sandbox/tmp",
        "FIRST",
        "FULL",  # 16 MiB in all, though each file is under the file size limit
    ]


@pytest.mark.usefixtures("working_sandbox")
def test_repository_tests_can_use_multiprocessing_pools_and_locks():
    # A test suite using multiprocessing (or joblib's processes) must pass here as it does
    # in CI elsewhere: its semaphores need a writable /dev/shm.
    script = (
        "import multiprocessing as mp\n"
        "with mp.get_context('fork').Pool(2) as pool:\n"
        "    print(pool.map(abs, [-1, -2]))\n"
        "lock = mp.Lock()\n"
        "print(lock.acquire(timeout=1))\n"
    )
    result = Sandbox(spec(readonly=sandbox.own_code_paths())).run(
        [sys.executable, "-c", script], timeout=60
    )

    assert lines_of(result) == ["[1, 2]", "True"]


@pytest.mark.usefixtures("working_sandbox")
def test_the_shared_memory_directory_is_private_and_capped(tmp_path: Path):
    marker = f"trainhook-shm-probe-{os.getpid()}"
    # Files of 8 MiB each, under the file size limit (the spec's 16 MiB disk): only the
    # size of /dev/shm itself can stop them.
    files = sandbox.SHM_SIZE // (8 * MIB) + 1
    script = (
        f"touch /dev/shm/{marker} && echo WROTE; "
        f"for i in $(seq {files}); do "
        "head -c 8388608 /dev/zero > /dev/shm/f$i 2>/dev/null || { echo FULL; exit 0; }; "
        "done; echo UNCAPPED"
    )
    result = run(spec(), script)

    assert lines_of(result) == ["WROTE", "FULL"]
    assert not Path("/dev/shm", marker).exists()  # the host's /dev/shm never saw it


# ---- host paths: read-only, writable, hidden ---------------------------------------------


@pytest.fixture
def host_paths(tmp_path: Path) -> SimpleNamespace:
    shared = tmp_path / "shared"
    (shared / "home" / "db").mkdir(parents=True)
    (shared / "wheel.txt").write_text("wheel\n")
    (shared / "home" / "db" / "trainhook.db").write_text("every raw delivery\n")
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "old.txt").write_text("old\n")
    host_file = tmp_path / "host-file.txt"
    host_file.write_text("host\n")
    (out / "link").symlink_to(host_file)
    return SimpleNamespace(shared=shared, home=shared / "home", out=out, host_file=host_file)


@pytest.mark.usefixtures("working_sandbox")
def test_readonly_paths_are_readable_and_never_written(host_paths: SimpleNamespace):
    shared = host_paths.shared
    script = (
        f"cat {shared}/wheel.txt; "
        f"touch {shared}/planted 2>/dev/null && echo WRITTEN || echo READONLY; "
        f"stat -c %a {shared.parent}"
    )
    missing = shared.parent / "missing"

    result = run(spec(readonly=(shared, missing)), script)

    assert lines_of(result) == ["wheel", "READONLY", "755"]  # parents made readable
    assert not (shared / "planted").exists()


@ROOT_ONLY
@pytest.mark.usefixtures("working_sandbox")
def test_writable_paths_are_given_to_the_command_but_links_in_them_are_not_followed(
    host_paths: SimpleNamespace,
):
    out = host_paths.out
    script = f"echo new > {out}/sub/new.txt && echo old >> {out}/sub/old.txt && echo WROTE"

    result = run(spec(writable=(out,)), script)

    assert lines_of(result) == ["WROTE"]
    assert (out / "sub" / "new.txt").read_text() == "new\n"
    for path in (out, out / "sub", out / "sub" / "old.txt", out / "link"):
        assert path.lstat().st_uid == SANDBOX_UID, path
    assert host_paths.host_file.stat().st_uid == 0  # the link's target stays the host's


@ROOT_ONLY
def test_a_writable_tree_already_given_to_the_sandbox_user_is_not_walked_again(tmp_path: Path):
    top = tmp_path / "venv"
    (top / "bin").mkdir(parents=True)
    os.chown(top, SANDBOX_UID, SANDBOX_UID)

    sandbox._chown_tree(top, SANDBOX_UID)

    assert (top / "bin").stat().st_uid == 0


@pytest.mark.usefixtures("working_sandbox")
def test_a_hidden_path_inside_a_bound_one_is_an_empty_unreadable_directory(
    host_paths: SimpleNamespace,
):
    shared, home = host_paths.shared, host_paths.home
    script = (
        f"cat {shared}/wheel.txt; ls -A {home} 2>/dev/null || echo HIDDEN; "
        f"cat {home}/db/trainhook.db 2>/dev/null || echo UNREADABLE; stat -c %a {home}"
    )

    result = run(spec(readonly=(shared,), hide=(home,)), script)

    assert lines_of(result) == ["wheel", "HIDDEN", "UNREADABLE", "0"]


@pytest.mark.usefixtures("working_sandbox")
def test_a_hidden_path_outside_every_bound_one_is_not_there_at_all(
    host_paths: SimpleNamespace, tmp_path: Path
):
    result = run(spec(hide=(host_paths.home,)), f"ls {tmp_path} 2>&1 || echo ABSENT")

    assert lines_of(result)[-1] == "ABSENT"


# ---- files bound beside the command (the health check's model files) ---------------------


@pytest.mark.usefixtures("working_sandbox")
def test_files_are_bound_read_only_in_the_working_directory_the_spec_names(tmp_path: Path):
    model = tmp_path / "model.joblib"
    model.write_text("weights\n")
    script = "pwd; cat model.joblib; { echo x > model.joblib; } 2>/dev/null || echo READONLY"

    result = run(spec(files=(("model.joblib", model),), workdir="/release"), script)

    assert lines_of(result) == ["/release", "weights", "READONLY"]
    assert model.read_text() == "weights\n"


def test_files_inside_the_private_disk_are_refused_naming_the_setting(tmp_path: Path):
    model = tmp_path / "model.joblib"
    model.write_text("weights\n")

    with pytest.raises(ValueError, match=f"files are bound outside {ROOT}: set workdir"):
        Sandbox(spec(files=(("model.joblib", model),))).argv(["true"])


def test_the_bwrap_named_or_found_is_the_one_run(monkeypatch: pytest.MonkeyPatch):
    assert Sandbox(spec(), bwrap="/opt/bwrap").argv(["true"])[0] == "/opt/bwrap"
    monkeypatch.setattr(sandbox, "find_bwrap", lambda: "/found/bwrap")
    assert Sandbox(spec()).bwrap == "/found/bwrap"
    monkeypatch.setattr(sandbox, "find_bwrap", lambda: None)
    assert Sandbox(spec()).bwrap == "bwrap"


# ---- not as root: a user namespace -------------------------------------------------------


@pytest.mark.usefixtures("working_sandbox")
def test_not_as_root_every_namespace_is_new_and_the_network_only_shared_when_asked(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(sandbox, "privileged", lambda: False)

    closed = Sandbox(spec()).argv(["true"])
    opened = Sandbox(spec(network=True)).argv(["true"])

    assert "--unshare-all" in closed and "--share-net" not in closed
    assert "--unshare-all" in opened and "--share-net" in opened
    assert "--cap-add" not in closed and "setpriv" not in closed[-4]


# ---- sandbox_problem: does bubblewrap work here? ----------------------------------------


@pytest.mark.usefixtures("fresh_probe")
def test_without_bwrap_the_problem_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sandbox, "find_bwrap", lambda: None)

    assert sandbox.sandbox_problem() == f"bubblewrap (bwrap) is not installed: {INSTALL_HINT}"


@ROOT_ONLY
@pytest.mark.usefixtures("fresh_probe")
def test_without_prlimit_or_setpriv_the_problem_names_util_linux(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(sandbox, "find_bwrap", lambda: "/usr/bin/bwrap")
    which = shutil.which
    monkeypatch.setattr(
        sandbox.shutil, "which", lambda name: None if name != "bwrap" else which(name)
    )

    assert sandbox.sandbox_problem() == "prlimit and setpriv not found: install util-linux"
    sandbox.sandbox_problem.cache_clear()
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None if name == "setpriv" else "x")
    assert sandbox.sandbox_problem() == "setpriv not found: install util-linux"


@pytest.mark.usefixtures("fresh_probe")
def test_a_bwrap_that_cannot_start_or_fails_is_a_problem_saying_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(sandbox, "find_bwrap", lambda: str(tmp_path / "no-bwrap"))
    problem = sandbox.sandbox_problem()
    assert problem is not None
    assert problem.startswith(f"bubblewrap ({tmp_path / 'no-bwrap'}) cannot be started: ")

    sandbox.sandbox_problem.cache_clear()
    broken = tmp_path / "bwrap"
    broken.write_text("#!/bin/sh\necho 'setting up uid map: Permission denied'\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setattr(sandbox, "find_bwrap", lambda: str(broken))
    hint = "" if os.geteuid() == 0 else " (unprivileged user namespaces must be allowed)"
    assert sandbox.sandbox_problem() == (
        f"bubblewrap ({broken}) does not work here{hint}: setting up uid map: Permission denied"
    )

    sandbox.sandbox_problem.cache_clear()
    broken.write_text("#!/bin/sh\nexit 3\n")
    assert sandbox.sandbox_problem() == f"bubblewrap ({broken}) does not work here{hint}: exit 3"


@pytest.mark.usefixtures("working_sandbox")
def test_sandbox_problem_is_none_where_bubblewrap_works():
    assert sandbox.sandbox_problem() is None


# ---- own code: the interpreter, the venv, trainhook_runtime ------------------------------


def test_own_code_is_the_interpreter_the_venv_and_trainhook_runtime_never_usr():
    import trainhook_runtime

    paths = sandbox.own_code_paths()

    runtime = Path(trainhook_runtime.__file__).resolve().parent
    expected = [Path(sys.base_prefix), Path(sys.prefix), runtime]
    assert paths == tuple(dict.fromkeys(p for p in expected if not str(p).startswith("/usr/")))
    assert len(set(paths)) == len(paths)


def test_a_path_is_under_itself_and_its_parents_only():
    assert sandbox._under(Path("/usr"), Path("/usr"))
    assert sandbox._under(Path("/usr/lib"), Path("/usr"))
    assert not sandbox._under(Path("/usrlocal"), Path("/usr"))
    assert not sandbox._under(Path("/usr"), Path("/usr/lib"))


# ---- sandbox = false: the worker's user, a private copy ---------------------------------


def test_unsandboxed_the_env_is_the_base_with_the_specs_path_first_and_its_variables():
    own = str(Path(sys.executable).parent)
    base = {"PATH": f"{own}:/venv/bin::/usr/bin", "PYTHONHOME": "/opt/py", "KEEP": "1"}

    plain = Unsandboxed(spec(env={"MODE": "ci"}), base).env()
    venv = Unsandboxed(spec(path=("/venv/bin", "/tools"), env={"KEEP": "2"}), base).env()

    assert plain == {**base, "MODE": "ci"}
    assert venv == {"PATH": "/venv/bin:/tools:/usr/bin", "KEEP": "2"}  # no PYTHONHOME
    assert base["PYTHONHOME"] == "/opt/py"  # the caller's mapping is not changed


def test_unsandboxed_without_path_in_the_base_the_default_path_follows(
    monkeypatch: pytest.MonkeyPatch,
):
    env = Unsandboxed(spec(path=("/venv/bin",)), {}).env()

    assert env["PATH"] == ":".join(["/venv/bin", *(p for p in os.defpath.split(":") if p)])


def test_unsandboxed_the_command_runs_in_a_private_copy_beside_the_checkout(tmp_path: Path):
    checkout = checkout_in(tmp_path)
    (checkout / "link").symlink_to("data.csv")
    model = tmp_path / "model.joblib"
    model.write_text("weights\n")
    script = (
        "pwd; test -L link && echo LINK; cat model.joblib; echo poisoned > data.csv; cat data.csv"
    )
    runner = Unsandboxed(spec(checkout=checkout, files=(("model.joblib", model),)), os.environ)

    result = runner.run(["/bin/sh", "-c", script], timeout=30)

    where, *rest = lines_of(result)
    assert Path(where).parent.parent == tmp_path
    assert Path(where).name == "work" and Path(where).parent.name.startswith(".checkout.run-")
    assert rest == ["LINK", "weights", "poisoned"]
    assert (checkout / "data.csv").read_text() == "text\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkout", "model.joblib"]


def test_unsandboxed_without_a_checkout_the_command_runs_in_an_empty_directory():
    result = Unsandboxed(spec(), os.environ).run(["/bin/sh", "-c", "pwd; ls -A"], timeout=30)

    where, *listed = lines_of(result)
    assert Path(where).name == "work" and Path(where).parent.name.startswith(".run-")
    assert listed == []
    assert not Path(where).exists()


def test_unsandboxed_a_command_running_past_its_timeout_is_killed():
    started = time.monotonic()

    result = Unsandboxed(spec(), os.environ).run(["sleep", "30"], timeout=0.5)

    assert result.timed_out and not result.ok
    assert time.monotonic() - started < 15


# ---- worker/repocode.py: the spec and runner a stage gets --------------------------------

TWO_REPOS = """
forge_token_env = "FIRST_FORGE_TOKEN"
sandbox_env = { MODE = "ci", LEVEL = "1" }
sandbox_limits = { memory = "1G" }

[[repos]]
name = "octo-org/other"
provider = "github"
clone_url = "https://github.com/octo-org/other.git"
branches = ["main"]
secret_env = "OTHER_HOOK_KEY"
forge_token_env = "OTHER_API_KEY"
"""


@pytest.fixture
def two_repos(make_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    shared = tmp_path / "wheels"
    shared.mkdir()
    return make_settings(
        extra=TWO_REPOS,
        env={
            "FIRST_FORGE_TOKEN": "t1",
            "OTHER_HOOK_KEY": "k2",
            "OTHER_API_KEY": "t2",
            "TRAINHOOK_SANDBOX_PATHS": str(shared),
            "TRAINHOOK_SANDBOX_DISK": "64M",
        },
    )


def ctx_of(settings: Settings, index: int = 0) -> BuildContext:
    return cast(BuildContext, SimpleNamespace(settings=settings, repo=settings.repos[index]))


def test_every_repositorys_webhook_secret_and_forge_token_are_secret_names(two_repos: Settings):
    assert repocode.secret_names(ctx_of(two_repos)) == {
        "TEST_WEBHOOK_SECRET",
        "FIRST_FORGE_TOKEN",
        "OTHER_HOOK_KEY",
        "OTHER_API_KEY",
    }


def test_the_spec_has_the_repositorys_limits_own_code_shared_paths_and_hides_home(
    two_repos: Settings, tmp_path: Path
):
    extra = tmp_path / "health.py"

    made = repocode.sandbox_spec(
        ctx_of(two_repos), readonly=(extra,), env={"LEVEL": "2"}, workdir="/release"
    )

    assert made.limits == SandboxLimits(memory=1024**3, disk=64 * MIB)
    assert made.readonly == (*sandbox.own_code_paths(), tmp_path / "wheels", extra)
    assert made.hide == (two_repos.home, two_repos.artifacts_path)
    assert dict(made.env) == {"MODE": "ci", "LEVEL": "2"}  # the caller's win
    assert made.workdir == "/release"
    assert dict(repocode.sandbox_spec(ctx_of(two_repos, 1)).env) == {}


def test_a_repository_with_sandbox_false_runs_without_any_repositorys_secrets(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
):
    settings = make_settings(extra='sandbox = false\nsandbox_env = { MODE = "ci" }')
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", "hook secret")
    monkeypatch.setenv("TRAINHOOK_API_TOKEN", "api token")
    ctx = ctx_of(settings)

    runner = repocode.runner_for(ctx, repocode.sandbox_spec(ctx))

    assert isinstance(runner, Unsandboxed)
    assert "TEST_WEBHOOK_SECRET" not in runner.base_env
    assert "TRAINHOOK_API_TOKEN" not in runner.base_env
    assert runner.base_env["MODE"] == "ci"
    assert repocode.isolation_note(ctx) == "UNSANDBOXED (sandbox = false)"


@pytest.mark.usefixtures("working_sandbox")
def test_a_sandboxed_repository_gets_the_sandbox_and_a_note_only_when_networked(
    make_settings: Callable[..., Settings],
):
    plain = ctx_of(make_settings())
    networked = ctx_of(make_settings(extra="sandbox_network = true"))

    runner = repocode.runner_for(plain, repocode.sandbox_spec(plain))

    assert isinstance(runner, Sandbox)
    assert repocode.isolation_note(plain) is None
    assert repocode.isolation_note(networked) == "network on (sandbox_network = true)"


def test_where_the_sandbox_does_not_work_a_stage_refuses_saying_how_to_fix_it(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
):
    ctx = ctx_of(make_settings())
    made = repocode.sandbox_spec(ctx)
    monkeypatch.setattr(repocode, "sandbox_problem", lambda: "bwrap says no")

    with pytest.raises(StageFailed) as refused:
        repocode.runner_for(ctx, made)

    assert str(refused.value) == (
        "repository code runs only in a sandbox, and the sandbox does not work here: "
        f"bwrap says no ({INSTALL_HINT}). Or set `sandbox = false` for {ctx.repo.name} in "
        f"{ctx.settings.config_path} to run its code as the worker's own user."
    )
    monkeypatch.setattr(repocode, "sandbox_problem", lambda: f"missing: {INSTALL_HINT}")
    with pytest.raises(StageFailed) as hinted:
        repocode.runner_for(ctx, made)
    assert f"here: missing: {INSTALL_HINT}. Or set" in str(hinted.value)  # said once
