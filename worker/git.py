"""Running git safely: the one place git is invoked with the options and transports the
worker allows, and credentials are scrubbed from what it prints."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

# Transports git may use; `ext::` and `fd::` run commands and are never allowed.
ALLOWED_PROTOCOLS = "file:git:http:https:ssh"
GIT_TIMEOUT = 900.0
# Never run hooks from the mirror's config, never recurse into submodules, never follow an
# HTTP redirect (git's default follows the first one: a server, or whoever answers for it,
# could send the fetch to another host).
GIT_OPTIONS = (
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "submodule.recurse=false",
    "-c",
    "fetch.recurseSubmodules=false",
    "-c",
    "http.followRedirects=false",
    # Automatic housekeeping after a fetch runs inside it, never detached: no git process
    # outlives the mirror lock, so a lock file found under it is stale (see _fetch).
    "-c",
    "gc.autoDetach=false",
    "-c",
    "maintenance.autoDetach=false",
    # Every object a clone or fetch brings is checked (as `git fsck` would) before it is kept:
    # a tree with duplicate entries, `..` or `.git` names, a bad .gitmodules, ... fails the
    # transfer and never reaches the mirror (see MalformedObject).
    "-c",
    "transfer.fsckObjects=true",
)


class GitError(RuntimeError):
    """git failed for a reason that may pass (network, lock): the job is retried.
    `stderr` is what git said (scrubbed of credentials), for callers that tell failures
    apart."""

    def __init__(self, message: str, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr


def redact(url: str) -> str:
    """`url` without any user:password part, for messages and logs."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        return urlunsplit(parts._replace(netloc=host))
    return url


_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)


def scrub(text: str) -> str:
    """`text` with any `scheme://user:password@` credentials removed (git echoes URLs)."""
    return _USERINFO.sub(r"\1", text)


def transport(url: str) -> str:
    """The one git transport the configured `url` uses (`host:path` is ssh, a plain path is
    file), or "" (nothing allowed) for anything not in ALLOWED_PROTOCOLS, `ext::` included."""
    head = url.split("/", 1)[0]
    if "::" in head:
        return ""
    scheme = urlsplit(url).scheme.lower()
    if not scheme:
        scheme = "ssh" if ":" in head else "file"
    return scheme if scheme in ALLOWED_PROTOCOLS.split(":") else ""


def git_env(protocols: str = ALLOWED_PROTOCOLS) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINHOOK_")}
    env.update(
        # Overrides any protocol.* setting (the mirror's config included).
        GIT_ALLOW_PROTOCOL=protocols,
        GIT_TERMINAL_PROMPT="0",
        GIT_CONFIG_NOSYSTEM="1",
        GIT_ASKPASS="true",  # never wait for a password on a terminal
        LC_ALL="C",
    )
    return env


def git(
    *args: str,
    cwd: Path | None = None,
    timeout: float = GIT_TIMEOUT,
    protocols: str = ALLOWED_PROTOCOLS,
) -> str:
    """Run git with the safe options and only `protocols` allowed; returns stdout. Raises
    GitError with git's message."""
    try:
        done = subprocess.run(
            ["git", *GIT_OPTIONS, *args],
            cwd=cwd,
            env=git_env(protocols),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise GitError(f"git {args[0]} timed out after {timeout:.0f}s") from None
    if done.returncode != 0:
        said = scrub(done.stderr.strip())
        raise GitError(f"git {args[0]} failed: {said[-1000:]}", said)
    return done.stdout
