"""Missed deliveries: GitHub never retries a webhook delivery that failed, so trainhook asks.

For each GitHub repository with a forge token, `reconcile` lists its hook's recent deliveries
(`GET /repos/{owner}/{repo}/hooks/{hook_id}/deliveries`, newest first, cursor pagination by
the Link header) and groups them by `guid` (a redelivery keeps the guid, and trainhook's
dedupe key is that guid). A guid trainhook has no `deliveries` row for is redelivered
(`POST …/deliveries/{id}/attempts`), whatever GitHub saw: a failed attempt (not 2xx: trainhook
was down, answered 503, or timed out before storing) and a 2xx one alike (the database was
restored from an older backup, say). A guid already redelivered MAX_REDELIVERIES times
without ever being recorded is given up (a bad secret answers 401 every time) and reported.

The hook id is `hook_id` from the repositories file, else the one hook of the repository whose
URL is `TRAINHOOK_PUBLIC_URL/webhooks/github` (any URL ending in `/webhooks/github` when the
public URL is not set). `trainhook reconcile --since 3d` runs it once; with
TRAINHOOK_RECONCILE_INTERVAL=S the service runs it every S seconds over the last
max(2 S, 1 h). Redelivering twice is harmless: the second one answers `duplicate`.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from service.forges.api import ApiError, ForgeApi, client, request
from trainhook.db import reading
from trainhook.models import deliveries, utcnow
from trainhook.repos import RepoConfig
from trainhook.settings import Settings

log = logging.getLogger(__name__)

MAX_REDELIVERIES = 3
MAX_PAGES = 50  # 5,000 deliveries: far more than any look-back window should hold


@dataclass
class RepoReport:
    """What reconciling one repository found and did, as lines to print."""

    repo: str
    lines: list[str] = field(default_factory=list)
    redelivered: int = 0
    failed: bool = False


def _when(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None


def find_hook(http: httpx.Client, api: ForgeApi, public_url: str) -> int:
    """The id of trainhook's hook on the repository; raises ApiError when not exactly one."""
    url = api.url(f"{api.repo_path}/hooks?per_page=100")
    hooks = request(http, api, "GET", url, f"list the hooks of {api.repo}").json()
    want = f"{public_url}/webhooks/github" if public_url else None
    found = []
    for hook in hooks if isinstance(hooks, list) else []:
        target = str((hook.get("config") or {}).get("url") or "").rstrip("/")
        if target == want if want else target.endswith("/webhooks/github"):
            found.append(int(hook["id"]))
    if len(found) != 1:
        where = want or "a URL ending in /webhooks/github"
        what = "no hook" if not found else f"{len(found)} hooks ({found})"
        raise ApiError(
            f"{api.repo}: {what} delivering to {where}; set hook_id in the repositories file"
        )
    return found[0]


def list_deliveries(
    http: httpx.Client, api: ForgeApi, hook_id: int, since: datetime
) -> list[dict[str, Any]]:
    """The hook's deliveries at or after `since`, newest first (following the Link header)."""
    url: str | None = api.url(f"{api.repo_path}/hooks/{hook_id}/deliveries?per_page=100")
    found: list[dict[str, Any]] = []
    for _ in range(MAX_PAGES):
        if url is None:
            break
        response = request(http, api, "GET", url, f"list the deliveries of hook {hook_id}")
        page = response.json()
        if not isinstance(page, list):
            raise ApiError(f"hook {hook_id}: the deliveries answer is not a list")
        older = False
        for item in page:
            when = _when(item.get("delivered_at"))
            if when is not None and when < since:
                older = True
                continue
            found.append(item)
        following = response.links.get("next", {}).get("url")
        url = following if following and not older and api.same_origin(following) else None
    return found


def recorded(engine: Engine, guids: list[str]) -> set[str]:
    """The guids among `guids` that trainhook has a delivery row for."""
    found: set[str] = set()
    with reading(engine) as conn:
        for start in range(0, len(guids), 500):
            chunk = guids[start : start + 500]
            found.update(
                conn.execute(
                    sa.select(deliveries.c.delivery_id).where(
                        deliveries.c.provider == "github", deliveries.c.delivery_id.in_(chunk)
                    )
                ).scalars()
            )
    return found


def _seen(attempt: dict[str, Any]) -> str:
    return (
        f"GitHub saw {attempt.get('status_code') or 'no answer'} at {attempt.get('delivered_at')}"
    )


def _redeliver(
    http: httpx.Client, api: ForgeApi, hook_id: int, guid: str, attempts: list[dict[str, Any]],
    report: RepoReport, verb: str, dry_run: bool,
) -> None:  # fmt: skip
    latest = attempts[0]  # newest first
    about = f"{guid} ({latest.get('event') or '?'})"
    if sum(1 for a in attempts if a.get("redelivery")) >= MAX_REDELIVERIES:
        report.lines.append(
            f"  given up {about}: not recorded after {MAX_REDELIVERIES} redeliveries; "
            + _seen(latest)
        )
        return
    if not isinstance(latest.get("id"), int):
        report.lines.append(f"  skipped {about}: GitHub gave no delivery id")
        return
    if not dry_run:
        path = f"{api.repo_path}/hooks/{hook_id}/deliveries/{latest['id']}/attempts"
        request(http, api, "POST", api.url(path), f"redeliver {guid}")
    report.redelivered += 1
    report.lines.append(f"  {verb} {about}: no record here; {_seen(latest)}")


def reconcile_repo(
    http: httpx.Client, settings: Settings, engine: Engine, repo: RepoConfig, since: datetime,
    *, dry_run: bool = False,
) -> RepoReport:  # fmt: skip
    """Reconcile one repository; API failures are reported in the lines, never raised."""
    report = RepoReport(repo.name)
    api = ForgeApi.of(repo, settings.forge_token(repo))
    if repo.provider != "github":
        report.lines.append(f"{repo.name} ({repo.provider}): skipped, reconcile is for GitHub only")
        return report
    if api is None:
        report.lines.append(f"{repo.name}: skipped, no forge token (forge_token_env)")
        return report
    try:
        hook_id = repo.hook_id or find_hook(http, api, settings.public_url)
        items = list_deliveries(http, api, hook_id, since)
        by_guid: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for item in items:
            if isinstance(item.get("guid"), str) and item["guid"]:
                by_guid[item["guid"]].append(item)
        known = recorded(engine, list(by_guid))
        report.lines.append(
            f"{repo.name} (hook {hook_id}): {len(items)} deliveries, {len(by_guid)} distinct, "
            f"since {since.isoformat(timespec='seconds')}"
        )
        verb = "would redeliver" if dry_run else "redelivered"
        for guid, attempts in by_guid.items():
            if guid not in known:
                _redeliver(http, api, hook_id, guid, attempts, report, verb, dry_run)
        given_up = len(by_guid) - len(known) - report.redelivered
        report.lines.append(
            f"  {len(known)} recorded here, {report.redelivered} {verb}, {given_up} given up"
        )
    except ApiError as exc:
        report.failed = True
        report.lines.append(f"{repo.name}: error: {exc}")
    return report


def reconcile(
    settings: Settings, engine: Engine, since: datetime, *, repo: str | None = None,
    dry_run: bool = False, http: httpx.Client | None = None,
) -> list[RepoReport]:  # fmt: skip
    """Reconcile every configured repository (or the one named `repo`)."""
    chosen = [r for r in settings.repos if repo is None or r.name == repo]
    own = http is None
    http = http or client()
    try:
        return [reconcile_repo(http, settings, engine, r, since, dry_run=dry_run) for r in chosen]
    finally:
        if own:
            http.close()


class Reconciler:
    """TRAINHOOK_RECONCILE_INTERVAL: reconcile in a background thread every `interval` s."""

    def __init__(self, settings: Settings, engine: Engine, http: httpx.Client | None = None):
        self.settings, self.engine, self.http = settings, engine, http
        self.interval = settings.reconcile_interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Reconciler:
        if self.interval > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="reconcile", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            since = utcnow() - timedelta(seconds=max(2 * self.interval, 3600))
            try:
                for rep in reconcile(self.settings, self.engine, since, http=self.http):
                    if rep.redelivered or rep.failed:
                        log.warning("reconcile: %s", "; ".join(rep.lines))
            except Exception as exc:  # never let the thread die: try again next interval
                log.warning("reconcile failed: %s", type(exc).__name__)
