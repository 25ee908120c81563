"""Gitea and Forgejo webhooks: a bare hex HMAC-SHA256 in X-Gitea-Signature / X-Forgejo-Signature.

Forgejo is a fork of Gitea and sends every header twice (X-Forgejo-* and X-Gitea-*); Gitea also
sends X-Gogs-*, X-GitHub-* and X-Hub-Signature(-256) for compatibility. Only the route decides
which adapter runs: `/webhooks/gitea` checks X-Gitea-Signature first, `/webhooks/forgejo` checks
X-Forgejo-Signature first, each accepts the other's header name, and neither ever reads a
GitHub or Gogs header. Each route serves only repositories configured with its own provider.

Gitea signs the JSON payload it sends. With the hook's content type set to form
(`payload=<json>`), the signature is still over that JSON, not over the form body.

Outbound (REST API v1, `Authorization: token`): commit statuses, the same for both. Neither
has an API that lists a hook's deliveries or redelivers one (only the web UI does), so
reconcile skips Gitea and Forgejo repositories.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

import httpx

from service.forges import (
    BadRequest,
    ForgeApi,
    ForgeEvent,
    NoRedelivery,
    PullRequest,
    Push,
    Report,
    Unauthorized,
    content_type,
    header,
    is_sha,
    is_zero,
    optional,
    require,
    text,
)
from service.forges.api import owner_repo_path
from service.forges.common import (
    FORM,
    IssueComments,
    counts_every_commit,
    form_payload,
    json_or_form,
    listed_commit,
    pull_request,
)
from service.forges.statuses import CONTEXT, post

STATES = {"queued": "pending", "running": "pending", "succeeded": "success",
          "failed": "failure", "cancelled": "warning", "superseded": "warning",
          "ignored": "success"}  # fmt: skip
# The `pull_request` actions (docs.gitea.com, webhooks) that build the head, and the one that
# ends the request's builds (a merge is `closed` with `pull_request.merged`). Gitea names new
# commits `synchronized`; its X-Gitea-Event-Type header says `pull_request_sync` then, while
# X-Gitea-Event stays `pull_request` for every request event (labels and reviews too).
PULL_BUILD = ("opened", "synchronized", "reopened")
PULL_CLOSE = ("closed",)
PULL_EVENTS = ("pull_request", "pull_request_sync")


def signature(secret: str, content: bytes) -> str:
    """The X-Gitea-Signature / X-Forgejo-Signature value for `content`: bare hex HMAC-SHA256."""
    return hmac.digest(secret.encode(), content, "sha256").hex()


def _signed_content(headers: Mapping[str, str], body: bytes) -> bytes:
    """The bytes Gitea signed: the body, or for a form body the JSON in its `payload` field."""
    if content_type(headers) == FORM:
        return form_payload(body).encode("utf-8")
    return body


class Gitea(IssueComments, NoRedelivery):
    """The Gitea adapter (https://docs.gitea.com/usage/webhooks); `Gitea("forgejo")` for Forgejo.

    `name` is both the route (`/webhooks/<name>`) and the `provider` of the repositories it serves.
    """

    def __init__(self, name: str = "gitea") -> None:
        if name not in ("gitea", "forgejo"):
            raise ValueError(f"Gitea adapter name must be 'gitea' or 'forgejo', not {name!r}")
        self.name = name
        self.title = "Gitea" if name == "gitea" else "Forgejo"
        # Own header first, then the other fork's name for it.
        own, other = ("X-Gitea", "X-Forgejo") if name == "gitea" else ("X-Forgejo", "X-Gitea")
        self._label, self._other = own, other
        self._signature = (f"{own}-signature".lower(), f"{other}-signature".lower())
        self._delivery = (f"{own}-delivery".lower(), f"{other}-delivery".lower())
        self._event = (f"{own}-event".lower(), f"{other}-event".lower())

    def payload(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        """The JSON object, sent as JSON or as a form's `payload` field; raises BadRequest."""
        return json_or_form(headers, body)

    def repo_name(self, payload: dict[str, Any]) -> str:
        """`repository.full_name` (`owner/name`); raises BadRequest when absent."""
        return str(require(payload, "repository.full_name"))

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> None:
        """Check the hex HMAC-SHA256 in constant time; raises Unauthorized.

        Reads only X-Gitea-Signature / X-Forgejo-Signature: a GitHub-style X-Hub-Signature-256
        on this route is ignored, whatever it says.
        """
        sent = header(headers, *self._signature)
        if not sent:
            raise Unauthorized(
                f"missing {self._label}-Signature (or {self._other}-Signature) header: "
                "set the hook's secret"
            )
        expected = signature(secret, _signed_content(headers, body))
        if not hmac.compare_digest(sent.strip().lower().encode(), expected.encode()):
            raise Unauthorized("signature does not match")

    def event(self, headers: Mapping[str, str], payload: dict[str, Any]) -> ForgeEvent:
        """The delivery and, for a `push` event, the Push; raises BadRequest.

        Gitea sends no stable hook id; each delivery id is a UUID of its own, so the hook id
        is "". A `pull_request` event carries the PullRequest; other events (create, delete,
        ...) carry neither and are ignored.
        """
        event = header(headers, *self._event)
        if not event:
            raise BadRequest(f"missing {self._label}-Event (or {self._other}-Event) header")
        delivery = header(headers, *self._delivery)
        if not delivery:
            raise BadRequest(f"missing {self._label}-Delivery (or {self._other}-Delivery) header")
        if event in PULL_EVENTS:
            pull = self.pull(payload)
            return ForgeEvent(event=event, delivery_id=delivery, hook_id="", pull=pull)
        if event != "push":
            return ForgeEvent(event=event, delivery_id=delivery, hook_id="")
        return ForgeEvent(event=event, delivery_id=delivery, hook_id="", push=self.push(payload))

    def pull(self, payload: dict[str, Any]) -> PullRequest:
        """The neutral PullRequest of a `pull_request` payload; raises BadRequest naming the
        field. `pull_request.head.repo` is null when the fork was deleted: a fork, then."""
        return pull_request(self, payload, build=PULL_BUILD, close=PULL_CLOSE)

    def pull_ref(self, number: int) -> str:
        return f"refs/pull/{number}/head"

    def push(self, payload: dict[str, Any]) -> Push:
        """The neutral Push of a push payload; raises BadRequest naming the field.

        `after` all zeros is a deleted branch or tag; the message and author come from
        `head_commit`, else from the entry of `commits` whose id is `after`.
        """
        ref = str(require(payload, "ref"))
        after = str(require(payload, "after"))
        before = optional(payload, "before")
        deleted = is_zero(after)
        if not deleted and not is_sha(after):
            raise BadRequest("field 'after' is not a commit id")
        listed = listed_commit(payload, after)
        head = payload.get("head_commit")
        if not isinstance(head, dict):
            head = listed
        pusher = (
            text(optional(payload, "pusher.full_name"))
            or text(optional(payload, "pusher.login"))
            or text(optional(payload, "pusher.username"))
        )
        return Push(
            repo=self.repo_name(payload),
            ref=ref,
            before=before if isinstance(before, str) else None,
            after=after,
            deleted=deleted,
            commit_message=text(optional(head, "message")) if head else None,
            author=(text(optional(head, "author.name")) if head else None) or pusher,
        )

    def lists_every_commit(self, payload: dict[str, Any], listed: int) -> bool:
        # Gitea keeps a few newest commits and counts them all in `total_commits`.
        return counts_every_commit(payload.get("total_commits"), listed)

    # Outbound.

    def api_base(self, scheme: str, host: str) -> str:
        return f"{scheme}://{host}/api/v1"

    def repo_path(self, repo: str) -> str:
        return owner_repo_path(repo)

    def api_headers(self, token: str) -> dict[str, str]:
        return {"Accept": "application/json", "Authorization": f"token {token}"}

    def status_state(self, kind: str) -> str:
        return STATES[kind]

    def send_status(self, http: httpx.Client, api: ForgeApi, report: Report) -> None:
        post(http, api, report, context=CONTEXT)

    def serves_host(self, host: str) -> bool:
        return False  # self-hosted under any name: only the configured provider says

    def commit_url(self, web: str, sha: str) -> str:
        return f"{web}/commit/{sha}"

    def pull_url(self, web: str, number: int) -> str:
        return f"{web}/pulls/{number}"
