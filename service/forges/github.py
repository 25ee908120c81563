"""GitHub, both directions.

Inbound: X-Hub-Signature-256 over the raw body, JSON or form-encoded `payload=`.
Outbound (REST API, `Authorization: Bearer`): commit statuses, and the hook's delivery log
(`GET /repos/{owner}/{repo}/hooks/{hook_id}/deliveries`, newest first, cursor pagination by
the Link header; `POST …/deliveries/{id}/attempts` redelivers one), which reconcile reads
because GitHub never retries a failed delivery by itself.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx

from service.forges import (
    ZERO_SHA,
    ApiError,
    BadRequest,
    Delivery,
    ForgeApi,
    ForgeEvent,
    PullRequest,
    Push,
    Report,
    Unauthorized,
    is_sha,
    optional,
    require,
    text,
)
from service.forges.api import owner_repo_path, request
from service.forges.common import IssueComments, json_or_form, pull_request
from service.forges.statuses import CONTEXT, post

MAX_COMMITS = 2048  # a push payload lists at most this many commits
MAX_PAGES = 50  # of the delivery log, 100 a page: far more than any look-back window holds
STATES = {"queued": "pending", "running": "pending", "succeeded": "success",
          "failed": "failure", "cancelled": "error", "superseded": "error",
          "ignored": "success"}  # fmt: skip
# The `pull_request` actions (docs.github.com, webhook events: pull_request) that build the
# head, and the one that ends the request's builds; every other action builds nothing.
PULL_BUILD = ("opened", "synchronize", "reopened")
PULL_CLOSE = ("closed",)
PAGE = "?per_page=100"  # oldest first, as GitHub lists an issue's comments


def signature(secret: str, body: bytes) -> str:
    """The `X-Hub-Signature-256` value GitHub sends for `body`."""
    # hmac.digest is the one-shot C path: several times cheaper than hmac.new per request.
    return "sha256=" + hmac.digest(secret.encode(), body, "sha256").hex()


class GitHub(IssueComments):
    """The GitHub adapter (https://docs.github.com/en/webhooks)."""

    name = "github"
    title = "GitHub"
    redelivers = True
    comment_query = PAGE

    def payload(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        return json_or_form(headers, body)

    def repo_name(self, payload: dict[str, Any]) -> str:
        if "repository" not in payload and "organization" in payload:
            raise BadRequest(
                "no 'repository' in the payload: organization hooks are not supported, "
                "add the webhook to the repository"
            )
        return str(require(payload, "repository.full_name"))

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> None:
        sent = headers.get("x-hub-signature-256")
        if not sent:
            raise Unauthorized("missing X-Hub-Signature-256 header")
        # compare_digest is constant-time: the answer's timing says nothing about the secret.
        if not hmac.compare_digest(sent.encode(), signature(secret, body).encode()):
            raise Unauthorized("signature does not match")

    def event(self, headers: Mapping[str, str], payload: dict[str, Any]) -> ForgeEvent:
        event = headers.get("x-github-event")
        if not event:
            raise BadRequest("missing X-GitHub-Event header")
        delivery = headers.get("x-github-delivery")
        if not delivery:
            raise BadRequest("missing X-GitHub-Delivery header")
        if len(delivery) > 128:
            raise BadRequest("X-GitHub-Delivery header is too long")
        hook_id = headers.get("x-github-hook-id") or str(optional(payload, "hook_id") or "")
        if event == "pull_request":
            pull = self.pull(payload)
            return ForgeEvent(event=event, delivery_id=delivery, hook_id=hook_id[:64], pull=pull)
        if event != "push":
            return ForgeEvent(event=event, delivery_id=delivery, hook_id=hook_id[:64])
        after = str(require(payload, "after"))
        before = optional(payload, "before")
        deleted = payload.get("deleted")
        if deleted is None:
            deleted = after == ZERO_SHA
        if not isinstance(deleted, bool):
            raise BadRequest("field 'deleted' must be a boolean")
        head = optional(payload, "head_commit")
        push = Push(
            repo=self.repo_name(payload),
            ref=str(require(payload, "ref")),
            before=before if isinstance(before, str) else None,
            after=after,
            deleted=deleted,
            commit_message=text(optional(head, "message")) if isinstance(head, dict) else None,
            author=text(optional(head, "author.name") if isinstance(head, dict) else None)
            or text(optional(payload, "pusher.name")),
        )
        if not deleted and not is_sha(after):
            raise BadRequest("field 'after' is not a commit id")
        return ForgeEvent(event=event, delivery_id=delivery, hook_id=hook_id[:64], push=push)

    def pull(self, payload: dict[str, Any]) -> PullRequest:
        """The neutral PullRequest of a `pull_request` payload; raises BadRequest naming the
        field. `pull_request.head.repo` is null when the fork was deleted: a fork, then."""
        return pull_request(self, payload, build=PULL_BUILD, close=PULL_CLOSE)

    def pull_ref(self, number: int) -> str:
        return f"refs/pull/{number}/head"

    def lists_every_commit(self, payload: dict[str, Any], listed: int) -> bool:
        # A forced push drops commits that are in the diff but not in the list.
        return payload.get("forced") is False and listed < MAX_COMMITS

    # Outbound.

    def api_base(self, scheme: str, host: str) -> str:
        return "https://api.github.com" if host == "github.com" else f"{scheme}://{host}/api/v3"

    def repo_path(self, repo: str) -> str:
        return owner_repo_path(repo)

    def api_headers(self, token: str) -> dict[str, str]:
        return {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "Authorization": f"Bearer {token}",
        }

    def status_state(self, kind: str) -> str:
        return STATES[kind]

    def send_status(self, http: httpx.Client, api: ForgeApi, report: Report) -> None:
        post(http, api, report, context=CONTEXT)

    def find_hook(self, http: httpx.Client, api: ForgeApi, public_url: str) -> int:
        url = api.url(f"{api.repo_path}/hooks?per_page=100")
        hooks = request(http, api, "GET", url, f"list the hooks of {api.repo}").json()
        route = f"/webhooks/{self.name}"
        want = f"{public_url}{route}" if public_url else None
        found = []
        for hook in hooks if isinstance(hooks, list) else []:
            target = str((hook.get("config") or {}).get("url") or "").rstrip("/")
            if target == want if want else target.endswith(route):
                found.append(int(hook["id"]))
        if len(found) != 1:
            where = want or f"a URL ending in {route}"
            what = "no hook" if not found else f"{len(found)} hooks ({found})"
            raise ApiError(
                f"{api.repo}: {what} delivering to {where}; set hook_id in the repositories file"
            )
        return found[0]

    def deliveries(
        self, http: httpx.Client, api: ForgeApi, hook_id: int, since: datetime
    ) -> list[Delivery]:
        url: str | None = api.url(f"{api.repo_path}/hooks/{hook_id}/deliveries?per_page=100")
        found: list[Delivery] = []
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
                    older = True  # newest first: the next page is older still
                    continue
                found.append(_delivery(item))
            following = response.links.get("next", {}).get("url")
            url = following if following and not older and api.same_origin(following) else None
        return found

    def redeliver(
        self, http: httpx.Client, api: ForgeApi, hook_id: int, delivery: Delivery
    ) -> None:
        path = f"{api.repo_path}/hooks/{hook_id}/deliveries/{delivery.id}/attempts"
        request(http, api, "POST", api.url(path), f"redeliver {delivery.guid}")

    def serves_host(self, host: str) -> bool:
        return host == "github.com"

    def commit_url(self, web: str, sha: str) -> str:
        return f"{web}/commit/{sha}"

    def pull_url(self, web: str, number: int) -> str:
        return f"{web}/pull/{number}"


def _when(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _delivery(item: dict[str, Any]) -> Delivery:
    guid, id_ = item.get("guid"), item.get("id")
    return Delivery(
        guid=guid if isinstance(guid, str) else "",
        id=id_ if isinstance(id_, int) and not isinstance(id_, bool) else None,
        event=text(item.get("event")),
        status_code=item.get("status_code"),
        delivered_at=item.get("delivered_at"),
        redelivery=bool(item.get("redelivery")),
    )
