"""Missed deliveries: GitHub never retries a webhook delivery that failed, so trainhook asks.

For each repository with a forge token whose forge keeps a delivery log it can redeliver
from (`Forge.redelivers`: GitHub; see each forge module for the others), `reconcile` lists
its hook's recent deliveries (`Forge.deliveries`, newest first) and groups them by `guid` (a
redelivery keeps the guid, and trainhook's dedupe key is that guid). A guid trainhook has no
`deliveries` row for is redelivered (`Forge.redeliver`), whatever the forge saw: a failed
attempt (not 2xx: trainhook was down, answered 503, or timed out before storing) and a 2xx
one alike (the database was restored from an older backup, say). A guid already redelivered
MAX_REDELIVERIES times without ever being recorded is given up (a bad secret answers 401
every time) and reported.

The hook id is `hook_id` from the repositories file, else the one hook of the repository whose
URL is `TRAINHOOK_PUBLIC_URL/webhooks/<provider>` (`Forge.find_hook`; any URL ending in
`/webhooks/<provider>` when the public URL is not set). `trainhook reconcile --since 3d` runs
it once; with TRAINHOOK_RECONCILE_INTERVAL=S the service runs it every S seconds over the last
max(2 S, 1 h). Redelivering twice is harmless: the second one answers `duplicate`.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from service.forges import ApiError, Delivery, ForgeApi
from service.forges.api import client
from service.forges.registry import connect, forge_for, redelivering
from trainhook.db import reading
from trainhook.models import deliveries, utcnow
from trainhook.repos import RepoConfig
from trainhook.settings import Settings

log = logging.getLogger(__name__)

MAX_REDELIVERIES = 3


@dataclass
class RepoReport:
    """What reconciling one repository found and did, as lines to print."""

    repo: str
    lines: list[str] = field(default_factory=list)
    redelivered: int = 0
    failed: bool = False


def recorded(engine: Engine, provider: str, guids: list[str]) -> set[str]:
    """The guids among `guids` that trainhook has a delivery row for from `provider`."""
    found: set[str] = set()
    with reading(engine) as conn:
        for start in range(0, len(guids), 500):
            chunk = guids[start : start + 500]
            found.update(
                conn.execute(
                    sa.select(deliveries.c.delivery_id).where(
                        deliveries.c.provider == provider, deliveries.c.delivery_id.in_(chunk)
                    )
                ).scalars()
            )
    return found


def _seen(api: ForgeApi, attempt: Delivery) -> str:
    return f"{api.forge.title} saw {attempt.status_code or 'no answer'} at {attempt.delivered_at}"


def _redeliver(
    http: httpx.Client, api: ForgeApi, hook_id: int, guid: str, attempts: list[Delivery],
    report: RepoReport, verb: str, dry_run: bool,
) -> None:  # fmt: skip
    latest = attempts[0]  # newest first
    about = f"{guid} ({latest.event or '?'})"
    if sum(1 for a in attempts if a.redelivery) >= MAX_REDELIVERIES:
        report.lines.append(
            f"  given up {about}: not recorded after {MAX_REDELIVERIES} redeliveries; "
            + _seen(api, latest)
        )
        return
    if latest.id is None:
        report.lines.append(f"  skipped {about}: {api.forge.title} gave no delivery id")
        return
    if not dry_run:
        api.forge.redeliver(http, api, hook_id, latest)
    report.redelivered += 1
    report.lines.append(f"  {verb} {about}: no record here; {_seen(api, latest)}")


def reconcile_repo(
    http: httpx.Client, settings: Settings, engine: Engine, repo: RepoConfig, since: datetime,
    *, dry_run: bool = False,
) -> RepoReport:  # fmt: skip
    """Reconcile one repository; API failures are reported in the lines, never raised."""
    report = RepoReport(repo.name)
    forge = forge_for(repo.provider)
    if forge is None or not forge.redelivers:
        report.lines.append(
            f"{repo.name} ({repo.provider}): skipped, reconcile is for {redelivering()} only"
        )
        return report
    api = connect(repo, settings.forge_token(repo))
    if api is None:
        report.lines.append(f"{repo.name}: skipped, no forge token (forge_token_env)")
        return report
    try:
        hook_id = repo.hook_id or forge.find_hook(http, api, settings.public_url)
        items = forge.deliveries(http, api, hook_id, since)
        by_guid: dict[str, list[Delivery]] = defaultdict(list)
        for item in items:
            if item.guid:
                by_guid[item.guid].append(item)
        known = recorded(engine, repo.provider, list(by_guid))
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
