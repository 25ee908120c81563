"""`[[repos.notify]]`: where a repository's build results are announced, and when.

Each entry names a `kind` (`slack`, `google_chat` or a generic signed `webhook`), the
environment variable holding its URL (`url_env`: an incoming-webhook URL is a credential, so
it never sits in the file), the events it wants (`on`) and, for `webhook`, the variable
holding the HMAC key (`secret_env`). Checked with the rest of the repositories file: every
problem reported at once, naming the file, the repository, the entry and the key.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainhook.configcheck import Problems, shown

KINDS = ("slack", "google_chat", "webhook")
EVENTS = ("failure", "recovered", "success", "deployed")
DEFAULT_ON = ("failure", "recovered")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEYS = ("kind", "url_env", "on", "secret_env")


@dataclass(frozen=True)
class NotifyConfig:
    """One `[[repos.notify]]` entry."""

    kind: str
    url_env: str
    on: tuple[str, ...] = DEFAULT_ON
    secret_env: str | None = None  # webhook only: the HMAC-SHA256 key's variable

    @property
    def target(self) -> str:
        """What a delivery is recorded under: stable when entries are reordered."""
        return f"{self.kind}:{self.url_env}"

    @property
    def envs(self) -> tuple[str, ...]:
        return (self.url_env,) + ((self.secret_env,) if self.secret_env else ())


def _entry(where: str, table: Any, problems: Problems) -> NotifyConfig | None:
    if not isinstance(table, dict):
        problems.add(f"{where}: expected a table ([[repos.notify]]), got {shown(table)}")
        return None
    before = len(problems.lines)
    for key in sorted(set(table) - set(_KEYS)):
        near = difflib.get_close_matches(key, _KEYS, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        problems.add(f"{where}: unknown key {key!r} = {shown(table[key])}{hint}")
    kind = table.get("kind")
    if kind not in KINDS:
        expected = ", ".join(repr(k) for k in KINDS)
        got = "missing" if kind is None else f"got {shown(kind)}"
        problems.add(f"{where}: key 'kind': {got}, expected one of {expected}")
    for key in ("url_env", "secret_env"):
        value = table.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not ENV_NAME.fullmatch(value):
            problems.add(f"{where}: key {key!r}: got {shown(value)}, expected a variable name")
    if "url_env" not in table:
        problems.add(
            f"{where}: missing required key 'url_env' (expected the variable holding the URL)"
        )
    if kind == "webhook" and table.get("secret_env") is None:
        problems.add(
            f"{where}: missing required key 'secret_env' (a webhook is signed: expected the "
            "variable holding its HMAC key)"
        )
    if kind in ("slack", "google_chat") and table.get("secret_env") is not None:
        problems.add(
            f"{where}: key 'secret_env': {kind} does not sign messages (its URL is the secret)"
        )
    on = table.get("on", list(DEFAULT_ON))
    if not isinstance(on, list) or not on or not all(e in EVENTS for e in on):
        expected = ", ".join(repr(e) for e in EVENTS)
        problems.add(f"{where}: key 'on': got {shown(on)}, expected a list of {expected}")
    if len(problems.lines) > before:
        return None
    return NotifyConfig(
        kind=str(kind),
        url_env=table["url_env"],
        on=tuple(dict.fromkeys(on)),
        secret_env=table.get("secret_env"),
    )


def check_notify(
    path: Path, label: str, entries: list[Any], problems: Problems
) -> tuple[NotifyConfig, ...]:
    """Every `[[repos.notify]]` entry of one repository, each problem added to `problems`."""
    out: list[NotifyConfig] = []
    for i, table in enumerate(entries):
        where = f"{path}: repository {label}: notify #{i + 1}"
        entry = _entry(where, table, problems)
        if entry is None:
            continue
        if any(e.target == entry.target for e in out):
            problems.add(f"{where}: {entry.kind} at {entry.url_env} is configured twice")
            continue
        out.append(entry)
    return tuple(out)
