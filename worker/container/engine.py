"""Which container engine builds images: docker, podman, or none (the `bundle` builder)."""

from __future__ import annotations

import functools
import shutil
import subprocess
from dataclasses import dataclass

# Said at start-up, in the deploy stage detail and so on the build page.
NO_ENGINE = "no container engine: the model is not served"
ENGINES = ("docker", "podman")
PROBE_TIMEOUT = 20.0


@dataclass(frozen=True)
class Engine:
    """An engine and the command prefix every call to it uses."""

    name: str
    argv: tuple[str, ...]

    def cmd(self, *args: str) -> list[str]:
        return [*self.argv, *args]


def engine_named(name: str) -> Engine:
    """The engine `docker` or `podman`. Podman runs with runc when it is installed: crun,
    podman's default runtime, fails on hosts with cgroups in hybrid mode, and one runtime
    must serve every command that touches a container (else they do not see each other)."""
    if name == "podman":
        runtime = ("--runtime", "runc") if shutil.which("runc") else ()
        return Engine("podman", ("podman", *runtime))
    if name == "docker":
        return Engine("docker", ("docker",))
    raise ValueError(f"unknown container engine {name!r}; expected one of {ENGINES}")


def answers(engine: Engine) -> bool:
    """Whether `<engine> info` succeeds: the binary exists and, for docker, a daemon
    answers (a docker CLI without its daemon is common and must not count)."""
    try:
        result = subprocess.run(
            engine.cmd("info"),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=PROBE_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


@functools.cache
def detect() -> Engine | None:
    """docker when `docker info` answers, else podman when `podman info` does, else None.
    Asked once per process: engines do not come and go while a worker runs."""
    for name in ENGINES:
        engine = engine_named(name)
        if answers(engine):
            return engine
    return None


def resolve(builder: str) -> tuple[str, str | None]:
    """The builder that runs for TRAINHOOK_BUILDER=`builder` and, when that is not what was
    asked for, why. `local` is docker, else podman, else `bundle` with NO_ENGINE; explicit
    names are taken as they are (a missing engine then fails the build stage, plainly)."""
    if builder != "local":
        return builder, None
    engine = detect()
    if engine is None:
        return "bundle", f"{NO_ENGINE} (neither `docker info` nor `podman info` answered)"
    return engine.name, None
