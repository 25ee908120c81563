"""The pull request comment: one comment on each pull/merge request, edited in place as new
pushes are built, with what the request does to the model.

A background thread in the service, the twin of the commit-status reporter
(service/statusreporter.py): it tails finished request builds (trigger `pull_request`,
succeeded or failed) of repositories with a forge token and, for each request, shows the
newest one. `pull_comments` holds one row per request (its head ref): the forge's id of the
comment once created and the build it shows. A replica claims the row by lease before
sending, so two replicas never both create; a restart reads the recorded id and edits.

A crash between the forge creating the comment and its id being recorded is the one window
where the id is unknown: `posting` is set before every create, and a create that finds it
set looks for trainhook's comment (by the hidden MARKER in its body) and edits that one.
A forge that is down or rate-limited is retried with backoff; a permanent refusal (no
access, the request gone) or MAX_ATTEMPTS failures give that build's comment up (kept in
`pull_comments.error`). None of this touches the build.

The comment says: candidate vs deployed model (macro-F1, F1 per class, rows, labels), as the
quality gate compared them (trainhook/trainresults.py), the gate's verdict, the cache
decision and why (the hash stage's explanation), each stage's duration, and a link to the
build under TRAINHOOK_PUBLIC_URL.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from service.background import HORIZON, BackgroundSender, after_created_before, watching
from service.forges import ApiError, ForgeApi
from service.forges.api import client
from service.forges.registry import connect
from service.statusreporter import LEASE, MAX_ATTEMPTS, backoff
from trainhook.buildview import get_build
from trainhook.db import reading
from trainhook.models import builds, pull_comments, utcnow
from trainhook.pullrequests import pull_number
from trainhook.settings import Settings
from trainhook.trainresults import TrainResult, train_result

log = logging.getLogger(__name__)

# Hidden in every forge's Markdown; how a comment whose id was lost is found again.
MARKER = "<!-- trainhook:pull-request-comment -->"
SHOWN = ("succeeded", "failed")  # a superseded or cancelled build has nothing to show
BATCH = 100
NOT_FOUND = 404


def _cell(value: object) -> str:
    """A table cell from text the repository may control: one line, no pipes, no markup."""
    text = " ".join(str(value).split())
    for char, escaped in (("\\", "\\\\"), ("|", "\\|"), ("<", "&lt;"), (">", "&gt;")):
        text = text.replace(char, escaped)
    return text


def _score(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "–"


def _seconds(value: object) -> str:
    return f"{value:.1f} s" if isinstance(value, int | float) else "–"


def _figures(result: TrainResult) -> list[str]:
    cand, dep = result.candidate, result.deployed or {}
    have = result.deployed is not None
    lines = [
        "| | candidate | deployed |",
        "|---|---|---|",
        f"| macro-F1 | {_score(cand.get('macro_f1'))} | "
        f"{_score(dep.get('macro_f1')) if have else 'none deployed'} |",
    ]
    labels = list(cand.get("labels") or [])
    labels += [x for x in dep.get("labels") or [] if x not in labels]
    for label in labels:
        lines.append(
            f"| F1 {_cell(label)} | {_score((cand.get('f1') or {}).get(label))} | "
            f"{_score((dep.get('f1') or {}).get(label))} |"
        )
    for key in ("used", "train", "validation"):
        mine, theirs = (cand.get("rows") or {}).get(key), (dep.get("rows") or {}).get(key)
        lines.append(f"| rows {key} | {mine if mine is not None else '–'} | "
                     f"{theirs if theirs is not None else '–'} |")  # fmt: skip
    lines.append(
        f"| labels | {_cell(', '.join(cand.get('labels') or [])) or '–'} | "
        f"{_cell(', '.join(dep.get('labels') or [])) or '–'} |"
    )
    return lines


def comment_body(build: dict[str, Any], result: TrainResult | None, public_url: str) -> str:
    """The Markdown of the comment for a finished request build (the contract's JSON)."""
    stages = {s["name"]: s for s in build["stages"]}
    link = (
        f"[build #{build['id']}]({public_url}/builds/{build['id']})"
        if public_url
        else (f"build #{build['id']}")
    )
    lines = [
        MARKER,
        f"### trainhook: {link} {build['status']}",
        "",
        f"Commit `{build['sha'][:12]}`: the candidate model of this request against the "
        "model deployed now. A request build is never deployed.",
        "",
    ]
    if result is not None:
        lines += _figures(result)
        verdict = "passed" if result.passed else "refused"
        lines += ["", f"**Quality gate:** {verdict}: {_cell(result.reason)}"]
    else:
        failed = next((s["name"] for s in build["stages"] if s["status"] == "failed"), None)
        where = f" at `{failed}`" if failed else ""
        error = f": {_cell(build['error'])[:300]}" if build.get("error") else "."
        status = build["status"]
        lines.append(f"No candidate model: the build {status}{where} before training{error}")
    train, hashed = stages.get("train") or {}, stages.get("hash") or {}
    if train.get("cache") or hashed.get("detail"):
        cache = train.get("cache") or "not decided"
        why = _cell(hashed.get("detail") or "")[:600]
        lines += ["", f"**Model cache:** {cache}" + (f": {why}" if why else "")]
    ran = [s for s in build["stages"] if s["status"] not in ("pending", "skipped")]
    if ran:
        lines += ["", "| stage | status | duration |", "|---|---|---|"]
        lines += [f"| {s['name']} | {s['status']} | {_seconds(s['duration_s'])} |" for s in ran]
    return "\n".join(lines) + "\n"


class PullCommenter(BackgroundSender):
    """Keeps one comment per request up to date; `tick()` once, or `start()` a thread."""

    name = "pull request comments"

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        interval: float = 1.0,
        http: httpx.Client | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings, self.engine, self.interval, self.clock = settings, engine, interval, clock
        self.apis: dict[tuple[str, str], ForgeApi] = {}
        for repo in settings.repos:
            api = connect(repo, settings.forge_token(repo))
            if api is not None and repo.pull_requests != "off":
                self.apis[(repo.provider, repo.name)] = api
        self._http = http
        self.owner = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.floor: int | None = None
        BackgroundSender.__init__(self)

    @property
    def enabled(self) -> bool:
        return bool(self.apis)

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = client()
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    def _join(self) -> Any:
        return builds.outerjoin(
            pull_comments,
            sa.and_(
                pull_comments.c.provider == builds.c.provider,
                pull_comments.c.repo == builds.c.repo,
                pull_comments.c.ref == builds.c.ref,
            ),
        )

    def tick(self) -> int:
        """Send what is due; returns how many comments the forges accepted."""
        if not self.enabled:
            return 0
        now = self.clock()
        watched = watching(self.apis)
        with reading(self.engine) as conn:
            if self.floor is None:
                # Requests are not read further back than the status reporter reads builds.
                self.floor = after_created_before(conn, now - HORIZON)
            rows = conn.execute(
                sa.select(builds.c.id, builds.c.provider, builds.c.repo, builds.c.ref,
                          pull_comments.c.next_attempt_at, pull_comments.c.claimed_until)
                .select_from(self._join())
                .where(
                    builds.c.id >= self.floor,
                    watched,
                    builds.c.trigger == "pull_request",
                    builds.c.status.in_(SHOWN),
                    sa.or_(pull_comments.c.build_id.is_(None),
                           pull_comments.c.build_id < builds.c.id),
                )
                .order_by(builds.c.id.desc())
                .limit(BATCH)
            ).all()  # fmt: skip
        sent, seen = 0, set()
        for row in rows:
            request = (row.provider, row.repo, row.ref)
            if request in seen or pull_number(row.ref) is None:
                continue  # only the newest finished build of a request is shown
            seen.add(request)
            due = row.next_attempt_at is None or row.next_attempt_at <= now
            free = row.claimed_until is None or row.claimed_until <= now
            if due and free and self._claim(request, now):
                sent += self._comment(request, row.id, now)
        return sent

    def _where(self, request: tuple[str, str, str]) -> sa.ColumnElement[bool]:
        provider, repo, ref = request
        return sa.and_(
            pull_comments.c.provider == provider,
            pull_comments.c.repo == repo,
            pull_comments.c.ref == ref,
        )

    def _claim(self, request: tuple[str, str, str], now: datetime) -> bool:
        provider, repo, ref = request
        until = now + LEASE
        with self.engine.begin() as conn:
            dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
            inserted = conn.execute(
                dialect.insert(pull_comments)
                .values(provider=provider, repo=repo, ref=ref, posting=False, attempts=0,
                        claimed_by=self.owner, claimed_until=until, updated_at=now)
                .on_conflict_do_nothing(index_elements=["provider", "repo", "ref"])
                .returning(pull_comments.c.id)
            ).first()  # fmt: skip
            if inserted is not None:
                return True
            taken = conn.execute(
                pull_comments.update()
                .where(
                    self._where(request),
                    sa.or_(pull_comments.c.claimed_until.is_(None),
                           pull_comments.c.claimed_until <= now),
                    sa.or_(pull_comments.c.next_attempt_at.is_(None),
                           pull_comments.c.next_attempt_at <= now),
                )
                .values(claimed_by=self.owner, claimed_until=until)
            )  # fmt: skip
            return taken.rowcount == 1

    def _update(self, request: tuple[str, str, str], **values: object) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                pull_comments.update()
                .where(self._where(request), pull_comments.c.claimed_by == self.owner)
                .values(updated_at=self.clock(), **values)
            )

    def _settle(self, request: tuple[str, str, str], **values: object) -> None:
        self._update(request, claimed_by=None, claimed_until=None, **values)

    def _comment(self, request: tuple[str, str, str], build_id: int, now: datetime) -> int:
        provider, repo, ref = request
        api, number = self.apis[(provider, repo)], pull_number(ref)
        assert number is not None
        with reading(self.engine) as conn:
            # The row as it is now, under our claim: another replica may have shown this
            # build, or a newer one, since the batch was read.
            state = conn.execute(sa.select(pull_comments).where(self._where(request))).one()
            build = get_build(conn, build_id)
            result = train_result(conn, build_id)
        if build is None or (state.build_id is not None and state.build_id >= build_id):
            self._settle(request)
            return 0
        body = comment_body(build, result, self.settings.public_url)
        comment_id = state.comment_id
        try:
            if comment_id is not None:
                try:
                    api.forge.edit_comment(self.http, api, number, comment_id, body)
                except ApiError as exc:
                    if exc.status != NOT_FOUND:
                        raise
                    comment_id = None  # deleted on the forge: post a new one
            if comment_id is None and state.posting:
                comment_id = api.forge.find_comment(self.http, api, number, MARKER)
                if comment_id is not None:
                    api.forge.edit_comment(self.http, api, number, comment_id, body)
            if comment_id is None:
                self._update(request, posting=True)
                comment_id = api.forge.create_comment(self.http, api, number, body)
        except ApiError as exc:
            attempts = (state.attempts or 0) + 1
            if exc.retry_after is None or attempts >= MAX_ATTEMPTS:
                log.warning("%s %s: comment for build %d given up: %s", repo, ref, build_id, exc)
                self._settle(request, build_id=build_id, attempts=0, next_attempt_at=None,
                             error=f"gave up: {exc}")  # fmt: skip
            else:
                delay = max(exc.retry_after, backoff(attempts))
                log.info("%s %s: comment retried in %.0fs: %s", repo, ref, delay, exc)
                self._settle(request, attempts=attempts, error=str(exc),
                             next_attempt_at=now + timedelta(seconds=delay))  # fmt: skip
            return 0
        self._settle(request, comment_id=comment_id, build_id=build_id, posting=False,
                     attempts=0, next_attempt_at=None, error=None)  # fmt: skip
        log.debug("%s %s: comment %s shows build %d", repo, ref, comment_id, build_id)
        return 1
