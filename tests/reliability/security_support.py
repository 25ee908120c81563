"""Shared set-up of the security tests: one repository per forge, each with its own
recognisable secret, and a client over the real app."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from starlette.testclient import TestClient

from service.app import create_app
from tests.service.forge_kits import FORGEJO, GITEA, GITHUB, GITLAB, REPO, Kit
from trainhook.runtime import Runtime, build_runtime
from trainhook.settings import Settings, load_settings

KITS: dict[str, Kit] = {k.provider: k for k in (GITHUB, GITLAB, GITEA, FORGEJO)}
# Recognisable, and all of one length per kind, so a wrong value can have the same length.
HOOK_SECRETS = {
    "github": "ghsecret-Q7v1-aaaaaaaaaaaaaaaa",
    "gitlab": "glsecret-Q7v2-bbbbbbbbbbbbbbbb",
    "gitea": "gtsecret-Q7v3-cccccccccccccccc",
    "forgejo": "fjsecret-Q7v4-dddddddddddddddd",
}
API_TOKEN = "apitoken-Q7v5-eeeeeeeeeeeeeeee"


def same_length_wrong(value: str, at: int = -1) -> str:
    """`value` with one character changed (at position `at`): same length, same alphabet."""
    index = at % len(value)
    old = value[index]
    new = "0" if old != "0" else "1"
    return value[:index] + new + value[index + 1 :]


def repos_toml(
    clone_url: str,
    extra: Mapping[str, str] | None = None,
    name: str = REPO,
    branches: tuple[str, ...] = ("main",),
) -> str:
    """One `[[repos]]` per forge, same name, secret in `<PROVIDER>_HOOK_KEY`; `extra` adds
    lines to the table of a provider."""
    tables = []
    for provider in KITS:
        tables.append(
            "[[repos]]\n"
            # A JSON string is a valid TOML basic string: any name, quotes included.
            f"name = {json.dumps(name)}\n"
            f'provider = "{provider}"\n'
            f'clone_url = "{clone_url}"\n'
            f"branches = {json.dumps(list(branches))}\n"
            f'secret_env = "{provider.upper()}_HOOK_KEY"\n' + (extra or {}).get(provider, "")
        )
    return "\n".join(tables)


def forge_settings(
    tmp_path: Path,
    db_url: str,
    clone_url: str = "https://github.com/octo-org/social-score-api.git",
    *,
    extra: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    name: str = REPO,
    branches: tuple[str, ...] = ("main",),
) -> Settings:
    config = tmp_path / "trainhook.toml"
    config.write_text(repos_toml(clone_url, extra, name, branches))
    base = {
        "TRAINHOOK_HOME": str(tmp_path / "home"),
        "TRAINHOOK_CONFIG": str(config),
        "TRAINHOOK_DATABASE_URL": db_url,
        "TRAINHOOK_API_TOKEN": API_TOKEN,
        **{f"{p.upper()}_HOOK_KEY": s for p, s in HOOK_SECRETS.items()},
        **(env or {}),
    }
    return load_settings(base)


@contextmanager
def serving(settings: Settings, engine: sa.Engine) -> Iterator[tuple[TestClient, Runtime]]:
    runtime = build_runtime(settings, engine)
    with TestClient(create_app(runtime), raise_server_exceptions=False) as client:
        yield client, runtime


def counts(engine: sa.Engine) -> dict[str, int]:
    """Rows per table: what a request left behind."""
    with engine.connect() as conn:
        return {
            table: conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in ("deliveries", "builds", "stage_events", "jobs")
        }
