"""Running repository code in a bubblewrap sandbox.

Repository code (test commands, the build backends a venv install runs, anything that
unpickles a model beside a checkout) is untrusted: it must not read the worker's secrets
(scrubbing its environment is not enough while it can read /proc/<worker>/environ as the
same user), reach `$TRAINHOOK_HOME` (the database, the caches, other repositories' mirrors
and releases), kill or outlive the worker, or exhaust the machine the receiver runs on.

`Sandbox(spec).run(argv, timeout=...)` runs `argv` under bubblewrap (`bwrap`) with:

- its own pid, ipc, uts, cgroup, mount and (unless `spec.network`) network namespaces;
  `--die-with-parent` and the pid namespace end everything it started when the command
  ends, times out or the worker dies (pid 1 of the namespace takes the rest with it);
- only read-only system paths (/usr, the /lib* and /bin links, a short list of /etc
  files), the Python interpreter, trainhook's venv and `trainhook_runtime` package, and what the
  caller binds; never $TRAINHOOK_HOME (hidden under an empty tmpfs when it lies inside a
  bound path), /root, /home, the host's /proc or the database's socket;
- a private /dev/shm of SHM_SIZE (multiprocessing's locks and pools need one);
- a private, size-limited tmpfs at /sandbox holding the working directory, /tmp (a link)
  and $HOME; the checkout is bound read-only at /sandbox-source and copied into the
  working directory before the command starts, so the export the hash and train stages
  read later is never written (measured: ~35 ms to start the sandbox, plus the copy at
  ~1 GB/s in memory);
- an environment made from nothing: PATH, HOME, TMPDIR, LANG, PYTHONUNBUFFERED and the
  caller's variables (passed as bwrap's own environment, so they never appear on a
  command line other host users can read);
- rlimits set by `prlimit` just before exec: address space and CPU seconds per process,
  processes of the sandbox's user, and file size; the tmpfs size caps the disk. Its
  oom_score_adj is 1000, so the kernel's OOM killer picks the sandbox before the worker.

As root (the development default), the command runs as uid/gid 65534 (nobody) with every
capability dropped and no_new_privs (setuid binaries do nothing): that uid owns nothing
on the host and RLIMIT_NPROC counts only its own processes. Not as root (the production
image's user), bwrap makes a user namespace instead (`--unshare-all`), which the kernel
must allow (see the README's GKE notes); the command then runs as the worker's uid inside
it, and RLIMIT_NPROC also counts the worker's own threads.

`sandbox_problem()` says, once per process, whether bubblewrap works here; callers refuse
to run repository code when it does not (unless the repository opted out with
`sandbox = false`, see `Unsandboxed`).
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import trainhook_runtime
from trainhook.sandboxsettings import SandboxLimits, human
from worker.commands import CommandResult, run_command

SANDBOX_UID = 65534  # nobody: owns no file on the host
ROOT = "/sandbox"  # the private tmpfs
SHM_SIZE = 64 * 1024**2  # the private /dev/shm
WORKDIR = f"{ROOT}/work"
HOME = f"{ROOT}/home"
SOURCE = "/sandbox-source"  # the checkout, read-only, copied to WORKDIR
SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
# What programs need from /etc: the dynamic loader, names of users and hosts, certificates,
# time zones and MIME types, the alternatives links /usr/bin points into. Not the rest: it
# may hold the repositories file, mounted secrets or the host's own credentials.
ETC_ENTRIES = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "passwd",
    "group",
    "nsswitch.conf",
    "host.conf",
    "hosts",
    "resolv.conf",
    "gai.conf",
    "services",
    "protocols",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "pki",
    "localtime",
    "timezone",
    "mime.types",
    "alternatives",
    "os-release",
    "debian_version",
)
INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; the worker image has it)"
)
SETUP_FAILED = 125  # the sandbox's own setup failed (not the command)


@dataclass(frozen=True)
class SandboxSpec:
    """What one sandboxed command sees.

    `checkout`: copied into the working directory (never written itself). `files`: (name,
    host file) pairs bound read-only into the working directory (the health check's model
    files). `readonly`/`writable`: host paths bound at the same place (venvs are not
    relocatable). `hide`: host paths never visible, even inside a bound path. `path`: the
    PATH directories (default: the worker's Python first, then the system's). `env`: more
    variables. `workdir`: the working directory inside the sandbox."""

    limits: SandboxLimits
    checkout: Path | None = None
    files: tuple[tuple[str, Path], ...] = ()
    readonly: tuple[Path, ...] = ()
    writable: tuple[Path, ...] = ()
    hide: tuple[Path, ...] = ()
    network: bool = False
    path: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str = WORKDIR


class Runner(Protocol):
    """Runs a command as a `SandboxSpec` says: `Sandbox`, or `Unsandboxed` for a repository
    with `sandbox = false`."""

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        on_output: Callable[[str], None] | None = None,
    ) -> CommandResult: ...


def find_bwrap() -> str | None:
    return shutil.which("bwrap")


def privileged() -> bool:
    """Root runs bwrap without a user namespace and drops to SANDBOX_UID inside."""
    return os.geteuid() == 0


def default_path() -> tuple[str, ...]:
    """PATH in the sandbox: the worker's Python first (as for `child_env`), then the system."""
    return (str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin")


def own_code_paths() -> tuple[Path, ...]:
    """The interpreter (its base prefix: a pyenv or /opt Python lives outside /usr), the
    worker's venv and the `trainhook_runtime` package (what pickled models reference; in a
    development checkout it is outside the venv). Read-only in every sandbox."""
    runtime = Path(trainhook_runtime.__file__).resolve().parent
    paths = [Path(sys.base_prefix), Path(sys.prefix), runtime]
    return tuple(dict.fromkeys(p for p in paths if not _under(p, Path("/usr"))))


def _under(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


class Sandbox:
    """Runs commands as `spec` says, under bubblewrap (see the module's docstring)."""

    def __init__(self, spec: SandboxSpec, *, bwrap: str | None = None) -> None:
        self.spec = spec
        self.bwrap = bwrap or find_bwrap() or "bwrap"

    def env(self) -> dict[str, str]:
        """The command's whole environment."""
        env = {
            "PATH": ":".join(self.spec.path or default_path()),
            "HOME": HOME,
            "TMPDIR": f"{ROOT}/tmp",
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
        }
        env.update(self.spec.env)
        return env

    def _mounts(self) -> list[str]:
        """Bind and tmpfs options for everything below /, parents before children."""
        spec = self.spec
        mounts: list[tuple[Path, list[str]]] = []
        for path in spec.readonly:
            if path.exists():
                mounts.append((path, ["--ro-bind", str(path), str(path)]))
        for path in spec.writable:
            mounts.append((path, ["--bind", str(path), str(path)]))
        bound = [p for p, _ in mounts]
        for hidden in spec.hide:
            # Only when inside something bound (else it is not there at all); an empty
            # tmpfs over it, mounted after its parent and before anything bound inside it.
            if hidden.is_dir() and any(_under(hidden, p) and hidden != p for p in bound):
                empty = ["--perms", "0000", "--size", "4096", "--tmpfs", str(hidden)]
                mounts.append((hidden, empty))
        mounts.sort(key=lambda item: len(item[0].parts))
        # bwrap makes the missing parents of a mount point 0700 (as root: unreadable for
        # the sandbox's user); make them 0755 first, as on the host.
        parents = sorted(
            {str(a) for path, _ in mounts for a in path.parents if str(a) not in ("/", "/tmp")},
            key=lambda name: name.count("/"),
        )
        made = [arg for name in parents for arg in ("--perms", "0755", "--dir", name)]
        return made + [arg for _, args in mounts for arg in args]

    def argv(self, command: Sequence[str]) -> list[str]:
        """The full bwrap command line that runs `command` in the sandbox."""
        spec, limits = self.spec, self.spec.limits
        args = [self.bwrap, "--die-with-parent", "--new-session"]
        if privileged():
            # Real root: no user namespace (it would map only uid 0, and setpriv could not
            # switch to an unprivileged uid); namespaces one by one, and only the
            # capabilities the setup needs (copy, chown, switch user), dropped before exec.
            args += ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
            args += [] if spec.network else ["--unshare-net"]
            for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_CHOWN"):
                args += ["--cap-add", cap]
        else:
            args += ["--unshare-all"] + (["--share-net"] if spec.network else [])
        for name in SYSTEM_DIRS:
            host = Path("/") / name
            if host.is_symlink():
                args += ["--symlink", os.readlink(host), f"/{name}"]
            elif host.is_dir():
                args += ["--ro-bind", str(host), f"/{name}"]
        args += ["--perms", "0755", "--dir", "/etc"]  # bwrap would make it 0700
        for name in ETC_ENTRIES:
            args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        args += ["--proc", "/proc", "--dev", "/dev"]
        # POSIX semaphores and shared memory live in /dev/shm: without a writable one every
        # multiprocessing lock, Pool or Queue raises PermissionError and joblib falls back to
        # serial, so a test suite that passes in CI elsewhere failed here. Private and capped
        # like a container's (Docker's default size), since its pages are memory.
        args += ["--perms", "01777", "--size", str(SHM_SIZE), "--tmpfs", "/dev/shm"]
        # One file system for everything the command may write, so one size caps it all;
        # /tmp is a link into it (made before the mounts: host paths under /tmp, say an
        # operator's wheelhouse, are bound inside it).
        args += ["--perms", "0755", "--size", str(limits.disk), "--tmpfs", ROOT]
        args += ["--perms", "01777", "--dir", f"{ROOT}/tmp", "--perms", "0755", "--dir", HOME]
        args += ["--symlink", f"{ROOT.lstrip('/')}/tmp", "/tmp"]  # relative: bwrap resolves it
        args += self._mounts()
        if spec.checkout is not None:
            args += ["--ro-bind", str(spec.checkout), SOURCE]
        if spec.files:
            if _under(Path(spec.workdir), Path(ROOT)):
                # The setup gives ROOT to the sandbox's user; a read-only file in it would
                # make that fail.
                raise ValueError(f"files are bound outside {ROOT}: set workdir")
            args += ["--perms", "0755", "--dir", spec.workdir]
        for name, host in spec.files:
            args += ["--ro-bind", str(host), f"{spec.workdir}/{name}"]
        args += ["--chdir", "/", "--", "/bin/sh", "-c", self._setup(), "sandbox", *command]
        return args

    def _setup(self) -> str:
        """The shell script run first inside the sandbox: make the private directories,
        copy the checkout, drop privileges and limits, exec the command ("$@")."""
        spec, limits = self.spec, self.spec.limits
        q = shlex.quote
        lines = [
            "set -e",
            # The OOM killer takes the sandbox first, never the worker (raising is allowed).
            "echo 1000 > /proc/self/oom_score_adj 2>/dev/null || true",
            f"mkdir -p {q(spec.workdir)}",
        ]
        if spec.checkout is not None:
            lines.append(
                f"cp -a {SOURCE}/. {q(spec.workdir)}/ || {{ echo 'sandbox: copying the "
                f"checkout failed: does it fit in the sandbox disk ({human(limits.disk)})? "
                "Raise TRAINHOOK_SANDBOX_DISK or the repository'\"'\"'s sandbox_limits."
                f"' >&2; exit {SETUP_FAILED}; }}"
            )
        prlimit = [
            "prlimit",
            f"--as={limits.memory}",
            f"--cpu={limits.cpu_seconds}",
            f"--nproc={limits.processes}",
            f"--fsize={limits.disk}",
            "--core=0",
            "--",
        ]
        drop: list[str] = []
        if privileged():
            # What the setup made, not the mounts inside /tmp (read-only ones would fail).
            owner = f"{SANDBOX_UID}:{SANDBOX_UID}"
            lines.append(f"chown -h {owner} {ROOT} {HOME}")
            if _under(Path(spec.workdir), Path(ROOT)):
                lines.append(f"chown -R -h {owner} {q(spec.workdir)}")
            drop = [
                "setpriv",
                f"--reuid={SANDBOX_UID}",
                f"--regid={SANDBOX_UID}",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--no-new-privs",
            ]
        lines.append(f"cd {q(spec.workdir)}")
        lines.append("exec " + " ".join(q(a) for a in [*drop, *prlimit]) + ' "$@"')
        return "\n".join(lines)

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        on_output: Callable[[str], None] | None = None,
    ) -> CommandResult:
        """Run `argv` in the sandbox (see run_command: merged output streamed to
        `on_output`, killed after `timeout` seconds). Raises OSError when bwrap cannot be
        started at all."""
        if privileged():
            for path in self.spec.writable:  # the sandbox's user must be able to write them
                _chown_tree(path, SANDBOX_UID)
        return run_command(
            self.argv(argv), cwd=Path("/"), env=self.env(), timeout=timeout, on_output=on_output
        )


def _chown_tree(path: Path, uid: int) -> None:
    """Give `path` and everything below it to `uid` (symlinks themselves, never followed),
    unless its top already belongs to it."""
    if path.lstat().st_uid == uid:
        return
    for dirpath, dirnames, filenames in os.walk(path):
        os.chown(dirpath, uid, uid, follow_symlinks=False)
        for name in [*dirnames, *filenames]:
            os.chown(os.path.join(dirpath, name), uid, uid, follow_symlinks=False)


class Unsandboxed:
    """`sandbox = false`: the command runs as the worker's own user with `base_env` (the
    worker's environment minus trainhook's settings and secrets), as trainhook did before
    it had a sandbox, but still in a private copy of the checkout (a temporary directory
    beside it), so the export later stages read is never written."""

    def __init__(self, spec: SandboxSpec, base_env: Mapping[str, str]) -> None:
        self.spec = spec
        self.base_env = base_env

    def env(self) -> dict[str, str]:
        env = dict(self.base_env)
        if self.spec.path is not None:
            own = str(Path(sys.executable).parent)
            rest = [p for p in env.get("PATH", os.defpath).split(":") if p and p != own]
            env["PATH"] = ":".join([*self.spec.path, *(p for p in rest if p not in self.spec.path)])
            env.pop("PYTHONHOME", None)  # a venv's python must not look in the worker's
        env.update(self.spec.env)
        return env

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        on_output: Callable[[str], None] | None = None,
    ) -> CommandResult:
        spec = self.spec
        parent = spec.checkout.parent if spec.checkout is not None else None
        prefix = f".{spec.checkout.name}.run-" if spec.checkout is not None else ".run-"
        with tempfile.TemporaryDirectory(prefix=prefix, dir=parent) as tmp:
            work = Path(tmp) / "work"
            if spec.checkout is not None:
                shutil.copytree(spec.checkout, work, symlinks=True)
            else:
                work.mkdir()
            for name, host in spec.files:
                shutil.copy2(host, work / name)
            return run_command(
                list(argv), cwd=work, env=self.env(), timeout=timeout, on_output=on_output
            )


@functools.cache
def sandbox_problem() -> str | None:
    """None when bubblewrap works on this machine, else why not, with how to fix it.
    Probed once per process (a sandbox that starts and runs `true`; ~35 ms), then cached."""
    bwrap = find_bwrap()
    if bwrap is None:
        return f"bubblewrap (bwrap) is not installed: {INSTALL_HINT}"
    needed = ["prlimit", *(["setpriv"] if privileged() else [])]
    missing = [tool for tool in needed if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not found: install util-linux"
    try:
        result = Sandbox(SandboxSpec(limits=SandboxLimits()), bwrap=bwrap).run(["true"], timeout=30)
    except OSError as exc:
        return f"bubblewrap ({bwrap}) cannot be started: {exc}"
    if not result.ok:
        why = result.last_lines(3) or f"exit {result.returncode}"
        hint = "" if privileged() else " (unprivileged user namespaces must be allowed)"
        return f"bubblewrap ({bwrap}) does not work here{hint}: {why}"
    return None
