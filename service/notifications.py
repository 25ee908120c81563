"""Build notifications: a background thread in the service that tells Slack, Google Chat or a
signed generic webhook when a build fails, recovers, succeeds or deploys
(`[[repos.notify]]`, trainhook/notifyconfig.py).

It works as the commit-status reporter (service/statusreporter.py) does, and for the same
reasons. Each tick reads, from a moving floor of build ids, the finished builds of watched
repositories not yet settled for every target; the first replica to look at a (build,
target) inserts its `notifications` row (the unique key makes that the claim: several
service replicas may run a notifier, and only one sends), with the event due or none. A
pending row is sent under a lease; a receiver that is down, slow or rate-limited (429, 5xx,
Retry-After) is retried later with backoff, a permanent refusal (4xx) or MAX_ATTEMPTS
failures give the message up, kept in `notifications.error`. None of this touches the build.

Delivery is at least once: a crash between the receiver's answer and the recorded result
sends the message once more after the restart, with the same `X-Trainhook-Delivery`, so a
receiver can drop it. The URLs are credentials: they are never logged nor stored.

Formats: Slack incoming webhooks take `{"text", "blocks"}` with mrkdwn (`<url|label>` links,
`&`, `<`, `>` escaped); Google Chat incoming webhooks take `{"text"}` with the same link and
escape syntax and `*bold*`; the generic webhook gets JSON signed with HMAC-SHA256 over the
raw body (`X-Trainhook-Signature-256: sha256=<hex>`, GitHub's scheme).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from service.background import (
    HORIZON,
    BackgroundSender,
    advanced_floor,
    after_created_before,
    watching,
)
from service.details import commit_url
from service.forges.api import DEFAULT_RETRY, retry_delay
from trainhook.builds import STAGES
from trainhook.buildview import get_build, get_logs
from trainhook.db import reading
from trainhook.models import builds, notifications, stage_events, utcnow
from trainhook.notifyconfig import NotifyConfig
from trainhook.repos import RepoConfig
from trainhook.settings import Settings

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=60)
MAX_ATTEMPTS = 8
BATCH = 100
TIMEOUT = 10.0
FINISHED = ("succeeded", "failed")
LOG_LINES = 12
LOG_CHARS = 1500
USER_AGENT = "trainhook-notify"


def backoff(attempt: int) -> float:
    """Seconds before retry `attempt` when the receiver did not say: 5, 10, 20 … ≤ 600."""
    return float(min(600, 5 * 2 ** max(0, attempt - 1)))


@dataclass(frozen=True)
class Target:
    """One configured destination with its URL (and signing key) read from the environment."""

    repo: RepoConfig
    config: NotifyConfig
    url: str = ""
    key: str = ""

    def __repr__(self) -> str:  # the URL and the key are credentials
        return f"Target({self.repo.name!r}, {self.config.target!r})"


@dataclass(frozen=True)
class Message:
    """What one notification says, before it is shaped for a receiver."""

    event: str
    delivery: str
    build: dict[str, Any]
    url: str
    commit_url: str | None
    failed_stage: str | None
    log_tail: str
    model: str

    @property
    def branch(self) -> str:
        ref = str(self.build["ref"])
        return ref.removeprefix("refs/heads/")

    @property
    def headline(self) -> str:
        build = self.build
        what = {
            "failure": "failed" + (f" at {self.failed_stage}" if self.failed_stage else ""),
            "recovered": "recovered: succeeded after a failure",
            "success": "succeeded",
            "deployed": "deployed",
        }[self.event]
        return f"{build['repo']} build #{build['id']} {what}"


def choose_event(conn: sa.Connection, build: sa.Row[Any], wanted: tuple[str, ...]) -> str | None:
    """The one event a target is sent for a finished build, the most specific it wants:
    failure; or recovered (the branch's previous finished build failed), deployed (the
    deploy stage succeeded) or success."""
    if build.status == "failed":
        return "failure" if "failure" in wanted else None
    if build.status != "succeeded":
        return None
    if "recovered" in wanted:
        previous = conn.execute(
            sa.select(builds.c.status)
            .where(
                builds.c.provider == build.provider,
                builds.c.repo == build.repo,
                builds.c.ref == build.ref,
                builds.c.id < build.id,
                builds.c.status.in_(FINISHED),
            )
            .order_by(builds.c.id.desc())
            .limit(1)
        ).scalar()
        if previous == "failed":
            return "recovered"
    if "deployed" in wanted:
        deployed = conn.execute(
            sa.select(stage_events.c.id).where(
                stage_events.c.build_id == build.id,
                stage_events.c.stage == "deploy",
                stage_events.c.status == "succeeded",
            )
        ).first()
        if deployed is not None:
            return "deployed"
    return "success" if "success" in wanted else None


def _model(build: dict[str, Any]) -> str:
    train = next((s for s in build["stages"] if s["name"] == "train"), None)
    if train is None or train["status"] != "succeeded":
        return "not trained"
    if train["cache"] == "hit":
        return "reused from the cache" + (
            f" ({train['detail'].split('produced by ', 1)[1].split(';')[0]})"
            if "produced by " in (train["detail"] or "")
            else ""
        )
    return "retrained"


def _tail(text: str) -> str:
    lines = text.rstrip("\n").splitlines()[-LOG_LINES:]
    return "\n".join(lines)[-LOG_CHARS:]


def compose(
    conn: sa.Connection,
    settings: Settings,
    repo: RepoConfig,
    build_id: int,
    event: str,
    delivery: str,
) -> Message | None:
    """The message for `event` of build `build_id`, read as the build is now."""
    build = get_build(conn, build_id)
    if build is None:
        return None
    failed = next((s for s in build["stages"] if s["status"] == "failed"), None)
    failed_stage = failed["name"] if failed else None
    tail = ""
    if failed is not None:
        tail = _tail(get_logs(conn, build_id).get(failed["name"], "") or (failed["detail"] or ""))
    elif event == "failure" and build.get("error"):
        tail = _tail(str(build["error"]))
    return Message(
        event=event,
        delivery=delivery,
        build=build,
        url=f"{settings.public_url}/builds/{build_id}",
        commit_url=commit_url(repo.clone_url, repo.provider, build["sha"]),
        failed_stage=failed_stage,
        log_tail=tail,
        model=_model(build),
    )


def _escape(text: str) -> str:
    """Slack and Google Chat treat &, < and > as markup (links, mentions)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _link(url: str | None, label: str) -> str:
    # A relative URL (no TRAINHOOK_PUBLIC_URL) is no link in a chat: the label alone.
    if not url or not url.startswith(("https://", "http://")):
        return _escape(label)
    return f"<{url}|{_escape(label)}>"


def _chat_lines(message: Message, bold: str) -> list[str]:
    build = message.build
    commit = _link(message.commit_url, str(build["sha"])[:12] or "(no commit yet)")
    author = f" by {_escape(build['author'])}" if build.get("author") else ""
    lines = [
        f"{bold}{_link(message.url, message.headline)}{bold}",
        f"Branch `{_escape(message.branch)}` · commit {commit}{author}",
    ]
    if build.get("commit_message"):
        lines.append(_escape(str(build["commit_message"]).splitlines()[0][:200]))
    lines.append(f"Model: {message.model}")
    if message.log_tail:
        # A fence inside the log would end the code block early.
        code = _escape(message.log_tail).replace("```", "'''")
        lines.append(f"Last lines of {message.failed_stage or 'the build'}:\n```\n{code}\n```")
    return lines


def slack_body(message: Message) -> dict[str, Any]:
    """An incoming-webhook message: `text` is the notification fallback, `blocks` the view."""
    lines = _chat_lines(message, "*")
    head, rest = lines[0], "\n".join(lines[1:])
    return {
        "text": _escape(message.headline),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": head}},
            {"type": "section", "text": {"type": "mrkdwn", "text": rest[:2900]}},
        ],
    }


def google_chat_body(message: Message) -> dict[str, Any]:
    """A Google Chat incoming-webhook message: text with Chat's own formatting."""
    return {"text": "\n".join(_chat_lines(message, "*"))[:4000]}


def webhook_body(message: Message) -> dict[str, Any]:
    build = message.build
    stages = {s["name"]: s["status"] for s in build["stages"]}
    return {
        "event": message.event,
        "delivery": message.delivery,
        "build": {
            "id": build["id"],
            "url": message.url,
            "repo": build["repo"],
            "provider": build["provider"],
            "ref": build["ref"],
            "branch": message.branch,
            "sha": build["sha"],
            "commit_url": message.commit_url,
            "author": build["author"],
            "commit_message": build["commit_message"],
            "trigger": build["trigger"],
            "status": build["status"],
            "created_at": build["created_at"],
            "finished_at": build["finished_at"],
            "duration_s": build["duration_s"],
            "failed_stage": message.failed_stage,
            "log_tail": message.log_tail,
            "model": message.model,
            "retrained": message.model == "retrained",
            "stages": {name: stages[name] for name in STAGES if name in stages},
        },
    }


def sign(key: str, body: bytes) -> str:
    """`X-Trainhook-Signature-256`: HMAC-SHA256 of the raw body, as GitHub signs its hooks."""
    return "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def request_for(target: Target, message: Message) -> tuple[bytes, dict[str, str]]:
    """The exact body and headers sent to `target`."""
    shape = {"slack": slack_body, "google_chat": google_chat_body, "webhook": webhook_body}
    body = json.dumps(shape[target.config.kind](message), separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json; charset=UTF-8", "User-Agent": USER_AGENT}
    if target.config.kind == "webhook":
        headers["X-Trainhook-Event"] = message.event
        headers["X-Trainhook-Delivery"] = message.delivery
        headers["X-Trainhook-Signature-256"] = sign(target.key, body)
    return body, headers


class SendError(Exception):
    """A delivery that did not succeed; `retry_after` None means it never will."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def send(
    transport: httpx.BaseTransport, target: Target, body: bytes, headers: dict[str, str]
) -> None:
    """POST through the transport itself, not an httpx.Client: the client logs every
    request's URL, and a notification URL is a credential. A transport follows no redirect
    (one could carry the message and its signature elsewhere)."""
    timeout = httpx.Timeout(TIMEOUT).as_dict()
    request = httpx.Request(
        "POST", target.url, content=body, headers=headers, extensions={"timeout": timeout}
    )
    try:
        response = transport.handle_request(request)
        try:
            response.read()
        finally:
            response.close()
    except httpx.HTTPError as exc:
        # Only the type: an httpx message may quote the URL.
        raise SendError(type(exc).__name__, DEFAULT_RETRY) from None
    if not response.is_success:
        raise SendError(f"HTTP {response.status_code}", retry_delay(response))


class Notifier(BackgroundSender):
    """Sends build notifications; `tick()` once, or `start()` a thread doing it."""

    name = "notifier"

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        interval: float = 1.0,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings, self.engine, self.interval, self.clock = settings, engine, interval, clock
        self.targets: dict[tuple[str, str], list[Target]] = {}
        for repo in settings.repos:
            for config in repo.notify:
                url = settings.secrets.get(config.url_env, "")
                key = settings.secrets.get(config.secret_env or "", "")
                if not url.startswith(("https://", "http://")) or (config.secret_env and not key):
                    names = " or ".join(config.envs)
                    log.warning("%s: notify %s: %s not set (or the URL is not http(s)): not sent",
                                repo.name, config.kind, names)  # fmt: skip
                    continue
                target = Target(repo, config, url, key)
                self.targets.setdefault((repo.provider, repo.name), []).append(target)
        self._transport = transport
        self.owner = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.floor: int | None = None
        BackgroundSender.__init__(self)

    @property
    def enabled(self) -> bool:
        return bool(self.targets)

    @property
    def transport(self) -> httpx.BaseTransport:
        if self._transport is None:
            self._transport = httpx.HTTPTransport()
        return self._transport

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _watched(self) -> sa.ColumnElement[bool]:
        return watching(self.targets)

    def _unsettled(self) -> sa.ColumnElement[bool]:
        """A finished build of a watched repository with a target not yet settled."""
        settled = (
            sa.select(sa.func.count())
            .where(notifications.c.build_id == builds.c.id, notifications.c.state != "pending")
            .scalar_subquery()
        )
        wanted = sa.case(
            *(
                (sa.and_(builds.c.provider == p, builds.c.repo == r), len(t))
                for (p, r), t in self.targets.items()
            ),
            else_=0,
        )
        return sa.and_(self._watched(), builds.c.status.in_(FINISHED), settled < wanted)

    def tick(self) -> int:
        """Send what is due; returns how many notifications the receivers accepted."""
        if not self.enabled:
            return 0
        now = self.clock()
        with reading(self.engine) as conn:
            if self.floor is None:
                self.floor = after_created_before(conn, now - HORIZON)
            rows = conn.execute(
                sa.select(builds)
                .where(builds.c.id >= self.floor, self._unsettled())
                .order_by(builds.c.id)
                .limit(BATCH)
            ).all()
            known = {
                (r.build_id, r.target): r
                for r in conn.execute(
                    sa.select(notifications).where(
                        notifications.c.build_id.in_([r.id for r in rows])
                    )
                )
            }
        sent = 0
        for build in rows:
            for target in self.targets[(build.provider, build.repo)]:
                row = known.get((build.id, target.config.target))
                try:
                    sent += self._handle(build, target, row, now)
                except sa.exc.DBAPIError:
                    raise
                except Exception:  # one bad message never stops the others
                    log.exception("build %d: notify %s failed", build.id, target.config.kind)
        with reading(self.engine) as conn:
            self.floor = self._advance(conn, self.floor, now)
        return sent

    def _handle(self, build: sa.Row[Any], target: Target, row: Any, now: datetime) -> int:
        if row is None:
            with reading(self.engine) as conn:
                event = choose_event(conn, build, target.config.on)
            claimed = self._insert(build.id, target, event, now)
            if claimed is None or event is None:
                return 0
            return self._deliver(build, target, claimed, event, 0, now)
        if row.state != "pending":
            return 0
        due = row.next_attempt_at is None or row.next_attempt_at <= now
        free = row.claimed_until is None or row.claimed_until <= now
        if due and free and self._claim(row.id, now):
            return self._deliver(
                build, target, (row.id, row.delivery), row.event, row.attempts, now
            )
        return 0

    def _advance(self, conn: sa.Connection, floor: int, now: datetime) -> int:
        return advanced_floor(
            conn, floor, now, watched=self._watched(), unsettled=self._unsettled()
        )

    def _insert(
        self, build_id: int, target: Target, event: str | None, now: datetime
    ) -> tuple[int, str] | None:
        """The row for (build, target), claimed by us; None when a replica made it first."""
        delivery = str(uuid.uuid4())
        pending = event is not None
        with self.engine.begin() as conn:
            dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
            inserted = conn.execute(
                dialect.insert(notifications)
                .values(build_id=build_id, target=target.config.target, event=event,
                        state="pending" if pending else "skipped", delivery=delivery,
                        attempts=0, claimed_by=self.owner if pending else None,
                        claimed_until=now + LEASE if pending else None,
                        created_at=now, updated_at=now)
                .on_conflict_do_nothing(
                    index_elements=[notifications.c.build_id, notifications.c.target])
                .returning(notifications.c.id)
            ).first()  # fmt: skip
        return None if inserted is None else (int(inserted.id), delivery)

    def _claim(self, row_id: int, now: datetime) -> bool:
        with self.engine.begin() as conn:
            taken = conn.execute(
                notifications.update()
                .where(
                    notifications.c.id == row_id,
                    notifications.c.state == "pending",
                    sa.or_(notifications.c.claimed_until.is_(None),
                           notifications.c.claimed_until <= now),
                    sa.or_(notifications.c.next_attempt_at.is_(None),
                           notifications.c.next_attempt_at <= now),
                )
                .values(claimed_by=self.owner, claimed_until=now + LEASE)
            )  # fmt: skip
            return taken.rowcount == 1

    def _settle(self, row_id: int, **values: object) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                notifications.update()
                .where(notifications.c.id == row_id, notifications.c.claimed_by == self.owner)
                .values(claimed_by=None, claimed_until=None, updated_at=self.clock(), **values)
            )

    def _deliver(
        self,
        build: sa.Row[Any],
        target: Target,
        claimed: tuple[int, str],
        event: str,
        attempts: int,
        now: datetime,
    ) -> int:
        row_id, delivery = claimed
        with reading(self.engine) as conn:
            message = compose(conn, self.settings, target.repo, build.id, event, delivery)
        if message is None:
            self._settle(row_id, state="given_up", error="build not found")
            return 0
        body, headers = request_for(target, message)
        try:
            send(self.transport, target, body, headers)
        except SendError as exc:
            attempts += 1
            if exc.retry_after is None or attempts >= MAX_ATTEMPTS:
                log.warning("build %d: notify %s (%s) given up: %s",
                            build.id, target.config.kind, event, exc)  # fmt: skip
                self._settle(row_id, state="given_up", attempts=attempts,
                             next_attempt_at=None, error=f"gave up: {exc}")  # fmt: skip
            else:
                delay = max(exc.retry_after, backoff(attempts))
                log.info("build %d: notify %s retried in %.0fs: %s",
                         build.id, target.config.kind, delay, exc)  # fmt: skip
                self._settle(row_id, attempts=attempts, error=str(exc),
                             next_attempt_at=now + timedelta(seconds=delay))  # fmt: skip
            return 0
        self._settle(row_id, state="sent", attempts=attempts + 1, next_attempt_at=None, error=None)
        log.debug("build %d: notify %s (%s) sent", build.id, target.config.kind, event)
        return 1
