"""What the forge modules do alike. GitHub and Gitea (and Forgejo): the same webhook body (JSON
or a form's `payload` field), the same `pull_request` payload and the same issue comments API.
Gitea and GitLab: a push's `commits` list and its count. Each forge keeps what differs
(headers, signature, the action words, its own push fields) in its module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, quote

import httpx

from service.forges import (
    BadRequest,
    Forge,
    ForgeApi,
    PullRequest,
    comment_id,
    content_type,
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

FORM = "application/x-www-form-urlencoded"


def form_payload(body: bytes) -> str:
    """The one `payload` field of a form body; raises BadRequest otherwise."""
    try:
        form = parse_qs(body.decode("ascii"), strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("form body is not valid url-encoding") from None
    values = form.get("payload")
    if not values or len(values) != 1:
        raise BadRequest("form body must carry exactly one 'payload' field")
    return values[0]


def json_or_form(headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """The JSON object, sent as JSON or as a form's `payload` field; raises BadRequest."""
    ctype = content_type(headers)
    if ctype == FORM:
        return json_object(form_payload(body))
    if ctype not in ("application/json", ""):
        raise BadRequest(f"unsupported content type {ctype!r}: use application/json or {FORM}")
    return json_object(body)


def listed_commit(payload: dict[str, Any], sha: str) -> dict[str, Any] | None:
    """The entry of the push's `commits` whose id is `sha`, if any; raises BadRequest when
    `commits` is there but not a list."""
    commits = payload.get("commits")
    if commits is not None and not isinstance(commits, list):
        raise BadRequest("field 'commits' must be a list")
    return next(
        (c for c in commits or () if isinstance(c, dict) and c.get("id") == sha),
        None,
    )


def counts_every_commit(total: object, listed: int) -> bool:
    """True when a push's count of its commits (`total`) is the number it lists."""
    return isinstance(total, int) and not isinstance(total, bool) and total == listed


def pull_request(
    forge: Forge, payload: dict[str, Any], build: tuple[str, ...], close: tuple[str, ...]
) -> PullRequest:
    """The neutral PullRequest of a `pull_request` payload, whose `action` is one of `build`,
    one of `close` or another; raises BadRequest naming the field.

    `pull_request.head.repo` is null when the fork was deleted: a fork, then.
    """
    verb = str(require(payload, "action"))
    number = pull_number(require(payload, "number", int), "number")
    base_repo = forge.repo_name(payload)
    head_repo = text(optional(payload, "pull_request.head.repo.full_name"))
    return PullRequest(
        repo=base_repo,
        number=number,
        action="build" if verb in build else "close" if verb in close else "other",
        verb=verb,
        ref=forge.pull_ref(number),
        sha=pull_sha(require(payload, "pull_request.head.sha"), "pull_request.head.sha"),
        head_repo=head_repo,
        same_repo=head_repo is not None and head_repo.lower() == base_repo.lower(),
        base_branch=str(require(payload, "pull_request.base.ref")),
        title=text(optional(payload, "pull_request.title")),
        author=text(optional(payload, "pull_request.user.login")),
        url=text(optional(payload, "pull_request.html_url")),
        before=pull_before(payload.get("before")),
    )


class IssueComments:
    """The comment trainhook keeps on a pull request, through the issue comments API
    (`/issues/{number}/comments`, `/issues/comments/{id}`) that GitHub and Gitea share.

    `comment_query` is added to the list request (its paging).
    """

    comment_query = ""

    def create_comment(self, http: httpx.Client, api: ForgeApi, number: int, body: str) -> str:
        url = api.url(f"{api.repo_path}/issues/{number}/comments")
        what = f"comment on #{number} of {api.repo}"
        return comment_id(request(http, api, "POST", url, what, body={"body": body}).json(), what)

    def edit_comment(
        self, http: httpx.Client, api: ForgeApi, number: int, comment_id: str, body: str
    ) -> None:
        # Comments are addressed by id alone, under the repository's issues.
        url = api.url(f"{api.repo_path}/issues/comments/{quote(comment_id, safe='')}")
        what = f"edit comment {comment_id} on #{number} of {api.repo}"
        request(http, api, "PATCH", url, what, body={"body": body})

    def find_comment(
        self, http: httpx.Client, api: ForgeApi, number: int, marker: str
    ) -> str | None:
        url = api.url(f"{api.repo_path}/issues/{number}/comments{self.comment_query}")
        what = f"list the comments on #{number} of {api.repo}"
        return marked(request(http, api, "GET", url, what).json(), marker)
