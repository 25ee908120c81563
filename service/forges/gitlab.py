"""GitLab webhooks: the secret token in X-Gitlab-Token; Push, Tag Push and Merge Request Hook.

GitLab signs nothing: it sends the hook's secret token verbatim, so the token is compared with
the configured secret in constant time, never stored (ingest drops the header) and never echoed.

Delivery identity: `Idempotency-Key` stays the same when a delivery is retried or resent from
the hook's log, so it is the dedupe key; `X-Gitlab-Event-UUID` (one per event) stands in on
GitLab versions without it. GitLab sends no stable hook id: `X-Gitlab-Webhook-UUID` is a fresh
random value on every request, so using it in the key would make every retry look new; the hook
id is therefore always "".

Outbound (REST API v4, `PRIVATE-TOKEN`): commit statuses (`name` is the context, and the
branch or tag is sent as `ref`). Listing and redelivering a hook's deliveries is not done:
GitLab retries failed deliveries itself, and its webhook events API (list the last 7 days,
resend one; GitLab 17.4 and later) is not used here, so reconcile skips GitLab repositories.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from service.forges import (
    ApiError,
    BadRequest,
    ForgeApi,
    ForgeEvent,
    NoRedelivery,
    PullRequest,
    Push,
    Report,
    Unauthorized,
    comment_id,
    content_type,
    header,
    is_sha,
    is_zero,
    json_object,
    marked,
    optional,
    pull_before,
    pull_number,
    pull_sha,
    require,
    text,
)
from service.forges.api import request
from service.forges.common import counts_every_commit, listed_commit
from service.forges.statuses import CONTEXT, post

PUSH_EVENTS = ("Push Hook", "Tag Push Hook")
MERGE_REQUEST_EVENT = "Merge Request Hook"
# `object_attributes.action` of a Merge Request Hook (docs.gitlab.com, webhook events): open
# and reopen build the head; `update` builds only when it brought commits (`oldrev` is then
# set; a title or label edit has none); close and merge end the request's builds.
MR_BUILD = ("open", "reopen")
MR_CLOSE = ("close", "merge")
STATES = {"queued": "pending", "running": "running", "succeeded": "success",
          "failed": "failed", "cancelled": "canceled", "superseded": "canceled",
          "ignored": "skipped"}  # fmt: skip
# GitLab refuses a state the status already has ("Cannot transition status via :run from
# :running"): the status was sent before (a restart between sending and recording it).
ALREADY = re.compile(r"cannot transition status", re.IGNORECASE)


def _digest(raw: bytes) -> bytes:
    # Hashing first makes both sides the same length: the comparison time says nothing about
    # the secret, not even its length.
    return hashlib.sha256(raw).digest()


class GitLab(NoRedelivery):
    """The GitLab adapter (https://docs.gitlab.com/user/project/integrations/webhooks/)."""

    name = "gitlab"
    title = "GitLab"

    def payload(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        """The JSON body; raises BadRequest for another content type or a non-object body."""
        ctype = content_type(headers)
        if ctype not in ("application/json", ""):
            raise BadRequest(f"unsupported content type {ctype!r}: GitLab sends application/json")
        return json_object(body)

    def repo_name(self, payload: dict[str, Any]) -> str:
        """`project.path_with_namespace` (subgroups included: `group/sub/project`).

        System hooks about a project carry the path at the top level instead. Raises BadRequest
        when neither is there: such an event names no repository, so no secret can check it.
        """
        top = payload.get("path_with_namespace")
        if "project" not in payload and isinstance(top, str) and top:
            return top
        return str(require(payload, "project.path_with_namespace"))

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> None:
        """Compare X-Gitlab-Token with `secret` in constant time; raises Unauthorized."""
        sent = headers.get("x-gitlab-token")
        if not sent:
            raise Unauthorized("missing X-Gitlab-Token header (set the hook's secret token)")
        # Header values arrive decoded as latin-1 (the raw bytes); the secret is text (UTF-8).
        sent_raw = sent.encode("latin-1", "replace")
        secret_raw = secret.encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(_digest(sent_raw), _digest(secret_raw)):
            raise Unauthorized("X-Gitlab-Token does not match the configured secret")

    def event(self, headers: Mapping[str, str], payload: dict[str, Any]) -> ForgeEvent:
        """The delivery and, for Push Hook and Tag Push Hook, the Push; raises BadRequest.

        A Merge Request Hook carries the PullRequest; any other event (System Hook, Note
        Hook, ...) has neither and is ignored.
        """
        event = headers.get("x-gitlab-event")
        if not event:
            raise BadRequest("missing X-Gitlab-Event header")
        delivery = header(headers, "idempotency-key", "x-gitlab-event-uuid")
        if not delivery:
            raise BadRequest("missing Idempotency-Key and X-Gitlab-Event-UUID headers")
        if event == MERGE_REQUEST_EVENT:
            pull = self.merge_request(payload)
            return ForgeEvent(event=event, delivery_id=delivery, hook_id="", pull=pull)
        if event not in PUSH_EVENTS:
            return ForgeEvent(event=event, delivery_id=delivery, hook_id="")
        return ForgeEvent(event=event, delivery_id=delivery, hook_id="", push=self.push(payload))

    def push(self, payload: dict[str, Any]) -> Push:
        """The neutral Push of a push or tag push payload; raises BadRequest naming the field.

        The commit built is `checkout_sha` (for a tag, the commit it points to), else `after`;
        `after` all zeros is a deleted branch or tag.
        """
        ref = str(require(payload, "ref"))
        after = str(require(payload, "after"))
        before = optional(payload, "before")
        deleted = is_zero(after)
        checkout = optional(payload, "checkout_sha")
        if checkout is not None and not isinstance(checkout, str):
            raise BadRequest("field 'checkout_sha' must be a string or null")
        sha = after if deleted else (checkout or after)
        if not deleted and not is_sha(sha):
            raise BadRequest("field 'checkout_sha'/'after' is not a commit id")
        head = listed_commit(payload, sha)
        return Push(
            repo=self.repo_name(payload),
            ref=ref,
            before=before if isinstance(before, str) else None,
            after=sha,
            deleted=deleted,
            commit_message=text(optional(head, "message")) if head else None,
            author=(text(optional(head, "author.name")) if head else None)
            or text(payload.get("user_name")),
        )

    def merge_request(self, payload: dict[str, Any]) -> PullRequest:
        """The neutral PullRequest of a Merge Request Hook; raises BadRequest naming the
        field. The source is the target project itself when both project ids agree."""
        attrs = require(payload, "object_attributes", dict)
        verb = str(attrs.get("action") or "")
        if not verb:
            raise BadRequest("missing field 'object_attributes.action'")
        number = pull_number(attrs.get("iid"), "object_attributes.iid")
        if verb in MR_BUILD or (verb == "update" and attrs.get("oldrev")):
            action = "build"
        else:
            action = "close" if verb in MR_CLOSE else "other"
        source_id, target_id = attrs.get("source_project_id"), attrs.get("target_project_id")
        same = isinstance(source_id, int) and source_id == target_id
        source = text(optional(attrs, "source.path_with_namespace"))
        sha = optional(attrs, "last_commit.id")
        return PullRequest(
            repo=self.repo_name(payload),
            number=number,
            action=action,
            verb=verb,
            ref=self.pull_ref(number),
            sha=pull_sha(sha, "object_attributes.last_commit.id"),
            head_repo=source,
            same_repo=same,
            base_branch=str(require(payload, "object_attributes.target_branch")),
            title=text(attrs.get("title")),
            author=text(optional(payload, "user.username")),
            url=text(attrs.get("url")),
            before=pull_before(attrs.get("oldrev")),
        )

    def pull_ref(self, number: int) -> str:
        return f"refs/merge-requests/{number}/head"

    def lists_every_commit(self, payload: dict[str, Any], listed: int) -> bool:
        # GitLab keeps the 20 newest commits and counts them all in `total_commits_count`.
        return counts_every_commit(payload.get("total_commits_count"), listed)

    # Outbound.

    def api_base(self, scheme: str, host: str) -> str:
        return f"{scheme}://{host}/api/v4"

    def repo_path(self, repo: str) -> str:
        return "/projects/" + quote(repo, safe="")

    def api_headers(self, token: str) -> dict[str, str]:
        return {"Accept": "application/json", "PRIVATE-TOKEN": token}

    def status_state(self, kind: str) -> str:
        return STATES[kind]

    def send_status(self, http: httpx.Client, api: ForgeApi, report: Report) -> None:
        ref = _short_ref(report.ref)
        try:
            post(http, api, report, name=CONTEXT, **({"ref": ref} if ref else {}))
        except ApiError as exc:
            if exc.status == 400 and ALREADY.search(str(exc)):
                return
            raise

    def create_comment(self, http: httpx.Client, api: ForgeApi, number: int, body: str) -> str:
        url = api.url(f"{api.repo_path}/merge_requests/{number}/notes")
        what = f"note on !{number} of {api.repo}"
        return comment_id(request(http, api, "POST", url, what, body={"body": body}).json(), what)

    def edit_comment(
        self, http: httpx.Client, api: ForgeApi, number: int, comment_id: str, body: str
    ) -> None:
        note = quote(comment_id, safe="")
        url = api.url(f"{api.repo_path}/merge_requests/{number}/notes/{note}")
        what = f"edit note {comment_id} on !{number} of {api.repo}"
        request(http, api, "PUT", url, what, body={"body": body})

    def find_comment(
        self, http: httpx.Client, api: ForgeApi, number: int, marker: str
    ) -> str | None:
        # Notes are listed newest first unless asked otherwise.
        query = "?per_page=100&sort=asc&order_by=created_at"
        url = api.url(f"{api.repo_path}/merge_requests/{number}/notes{query}")
        what = f"list the notes on !{number} of {api.repo}"
        return marked(request(http, api, "GET", url, what).json(), marker)

    def serves_host(self, host: str) -> bool:
        return "gitlab" in host

    def commit_url(self, web: str, sha: str) -> str:
        return f"{web}/-/commit/{sha}"

    def pull_url(self, web: str, number: int) -> str:
        return f"{web}/-/merge_requests/{number}"


def _short_ref(ref: str) -> str | None:
    for prefix in ("refs/heads/", "refs/tags/"):
        if ref.startswith(prefix):
            return ref[len(prefix) :]
    return None
