"""The forge seam: one interface each forge implements for both directions.

Inbound, a forge turns its webhook into a neutral `ForgeEvent` (parse, find the repository,
verify the signature, read the push) and says whether a push payload lists every commit (the
path filter's fast path, service/forges/payloadfilter.py). Outbound, it talks to its REST API
through a `ForgeApi`: where the API is and how to authenticate, the commit status of a build
(its state words and request), the one comment trainhook keeps on a pull/merge request
(created, found again, edited in place), listing a hook's deliveries and redelivering one,
and the web links of a commit and of a request. The forges are `github`, `gitlab` and
`gitea` (Gitea and Forgejo); the registry (service/forges/registry.py) is the one place
that picks one by its name: nothing else branches on a provider.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import orjson

ZERO_SHA = "0" * 40
# Column widths of the deliveries and builds tables: longer values are refused with a 400 here,
# never sent to the database (where PostgreSQL would refuse them and the forge see a 503).
MAX_EVENT, MAX_DELIVERY, MAX_HOOK, MAX_REF, MAX_AUTHOR = 64, 128, 64, 255, 255


class WebhookError(Exception):
    """A delivery that is refused; `status` is the HTTP answer and the message says why."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(WebhookError):
    status = 400


class Unauthorized(WebhookError):
    status = 401


class NotConfigured(WebhookError):
    status = 404


class TooLarge(WebhookError):
    status = 413


@dataclass(frozen=True)
class Push:
    """A push, in the same shape whichever forge sent it."""

    repo: str
    ref: str
    before: str | None
    after: str
    deleted: bool
    commit_message: str | None
    author: str | None
    # Every file the push changed, when the payload is known to list them all (filled by
    # ingest for repositories with path filters; see service/forges/payloadfilter.py), else None.
    files: frozenset[str] | None = None

    @property
    def branch(self) -> str | None:
        """The branch name for `refs/heads/...`, else None (tags and other refs)."""
        prefix = "refs/heads/"
        return self.ref[len(prefix) :] if self.ref.startswith(prefix) else None

    @property
    def tag(self) -> str | None:
        """The tag name for `refs/tags/...`, else None (branches and other refs)."""
        prefix = "refs/tags/"
        return self.ref[len(prefix) :] if self.ref.startswith(prefix) else None


# What a pull/merge request event asks for, in every forge's words: `build` its head
# (opened, new commits, reopened), `close` it (closed or merged: its queued builds end), or
# `other` (edited, labelled, assigned, ...: nothing to build).
PULL_ACTIONS = ("build", "close", "other")


@dataclass(frozen=True)
class PullRequest:
    """A pull (merge) request event, in the same shape whichever forge sent it.

    `ref` is where the forge keeps the request's head in the base repository
    (`refs/pull/N/head`, `refs/merge-requests/N/head`): the worker fetches it from the
    configured clone URL, never from the head repository the payload names.
    """

    repo: str  # the base repository (the one configured), full name
    number: int
    action: str  # one of PULL_ACTIONS
    verb: str  # the forge's own word for the action, for reasons ("synchronize")
    ref: str
    sha: str
    head_repo: str | None  # the repository the change comes from; None when deleted
    same_repo: bool  # the head branch lives in the base repository (not a fork)
    base_branch: str
    title: str | None = None
    author: str | None = None
    url: str | None = None  # the request's web page
    # The head before this event, when the forge says (GitHub `before` on a synchronize,
    # GitLab `oldrev` on an update that brought commits; Gitea and Forgejo do not): the new
    # commits are `before..sha`, which the path filters read at checkout.
    before: str | None = None


@dataclass(frozen=True)
class ForgeEvent:
    """One verified delivery: its identity, its event name and, for pushes, the push; for
    pull/merge requests, the request."""

    event: str
    delivery_id: str
    hook_id: str
    push: Push | None = None
    pull: PullRequest | None = None


class ApiError(Exception):
    """A forge API request that did not succeed. `retry_after` is None for a permanent failure
    (bad token, no permission, unknown repository, an operation the forge does not have),
    else the seconds to wait before trying again."""

    def __init__(self, message: str, *, status: int = 0, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


USER_AGENT = "trainhook"


@dataclass(frozen=True)
class ForgeApi:
    """One repository's API on its forge: which forge, its base URL, the repository, a token.

    The token goes only into `headers()`, never into a message or a repr.
    """

    forge: Forge
    base: str
    repo: str
    token: str = field(repr=False)

    @property
    def provider(self) -> str:
        return self.forge.name

    @property
    def repo_path(self) -> str:
        """The path naming the repository under `base` (`/repos/o/r`, `/projects/g%2Fr`)."""
        return self.forge.repo_path(self.repo)

    def headers(self) -> dict[str, str]:
        return {"User-Agent": USER_AGENT, **self.forge.api_headers(self.token)}

    def url(self, path: str) -> str:
        return self.base + path

    def same_origin(self, url: str) -> bool:
        """True when `url` (a pagination link, say) is on this API's host: the token is
        never sent anywhere else."""
        a, b = urlsplit(self.base), urlsplit(url)
        return (a.scheme, a.netloc) == (b.scheme, b.netloc)


@dataclass(frozen=True)
class Report:
    """One commit status to send for one build (see service/forges/statuses.py)."""

    build_id: int
    sha: str
    ref: str
    status: str  # the build's status (what is recorded as reported)
    state: str  # the forge's word for it
    description: str
    target_url: str | None


@dataclass(frozen=True)
class Delivery:
    """One attempt to deliver a webhook, as the forge's delivery log lists it.

    `guid` is the delivery id trainhook dedupes on ("" when the forge gave none); `id` is the
    forge's id of this attempt, the one a redelivery names (None when absent). `status_code`
    and `delivered_at` are kept as the forge sent them: they are only ever printed.
    """

    guid: str
    id: int | None
    event: str | None
    status_code: object
    delivered_at: object
    redelivery: bool


class Forge(Protocol):
    """A forge, both directions. Inbound methods are pure (no I/O) and safe on untrusted
    input; outbound methods that take an `httpx.Client` call the forge and raise ApiError."""

    name: str  # the route (`/webhooks/<name>`) and the `provider` of its repositories
    title: str  # how messages name the forge ("GitHub")
    redelivers: bool  # whether `find_hook`, `deliveries` and `redeliver` exist on its API

    # Inbound: a webhook delivery.

    def payload(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        """Decode the body into the JSON object; raises BadRequest naming what is wrong."""
        ...

    def repo_name(self, payload: dict[str, Any]) -> str:
        """The repository's full name, as configured; raises BadRequest when absent."""
        ...

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> None:
        """Check the signature over the raw bytes in constant time; raises Unauthorized."""
        ...

    def event(self, headers: Mapping[str, str], payload: dict[str, Any]) -> ForgeEvent:
        """The delivery's identity and, for a push, the neutral Push, for a pull or merge
        request event, the neutral PullRequest; raises BadRequest."""
        ...

    def pull_ref(self, number: int) -> str:
        """Where the forge keeps the head of request `number` in the base repository."""
        ...

    def lists_every_commit(self, payload: dict[str, Any], listed: int) -> bool:
        """True when the push payload's `commits` list (`listed` entries) is known to hold
        every commit the push added; False when the forge may have cut it or cannot say."""
        ...

    # Outbound: the forge's REST API.

    def api_base(self, scheme: str, host: str) -> str:
        """The API base URL on the forge's web host (used when `forge_api_url` is unset)."""
        ...

    def repo_path(self, repo: str) -> str:
        """The API path naming the repository `repo` (its full name)."""
        ...

    def api_headers(self, token: str) -> dict[str, str]:
        """The media type and the token, sent as the forge documents, on every API call."""
        ...

    def status_state(self, kind: str) -> str:
        """The forge's state for a build status kind: queued, running, succeeded, failed,
        cancelled, superseded, or ignored (a push that changed only ignored paths)."""
        ...

    def send_status(self, http: httpx.Client, api: ForgeApi, report: Report) -> None:
        """Set the commit status `trainhook` of `report.sha`; raises ApiError."""
        ...

    def create_comment(self, http: httpx.Client, api: ForgeApi, number: int, body: str) -> str:
        """Post `body` as a new comment on request `number`; returns the comment's id."""
        ...

    def edit_comment(
        self, http: httpx.Client, api: ForgeApi, number: int, comment_id: str, body: str
    ) -> None:
        """Replace the body of comment `comment_id` on request `number`."""
        ...

    def find_comment(
        self, http: httpx.Client, api: ForgeApi, number: int, marker: str
    ) -> str | None:
        """The id of a comment on request `number` whose body holds `marker`, else None
        (the first page of comments, oldest first, is enough: trainhook's comes early)."""
        ...

    def find_hook(self, http: httpx.Client, api: ForgeApi, public_url: str) -> int:
        """The id of trainhook's hook on the repository (the one delivering to
        `public_url`/webhooks/<name>, or to any such path when `public_url` is "")."""
        ...

    def deliveries(
        self, http: httpx.Client, api: ForgeApi, hook_id: int, since: datetime
    ) -> list[Delivery]:
        """The hook's delivery attempts at or after `since`, newest first."""
        ...

    def redeliver(
        self, http: httpx.Client, api: ForgeApi, hook_id: int, delivery: Delivery
    ) -> None:
        """Ask the forge to send `delivery` again (its payload, same delivery id)."""
        ...

    def serves_host(self, host: str) -> bool:
        """True when a web host name alone says it is this forge (github.com), for a commit
        link of a repository whose provider is not known."""
        ...

    def commit_url(self, web: str, sha: str) -> str:
        """The web page of commit `sha` of the repository at `web` (https://host/path)."""
        ...

    def pull_url(self, web: str, number: int) -> str:
        """The web page of request `number` of the repository at `web` (https://host/path)."""
        ...


class NoRedelivery:
    """The delivery-log part of a forge whose API cannot list a hook's deliveries or
    redeliver one: each call is refused with a permanent ApiError."""

    redelivers = False
    title: str

    def _refuse(self) -> ApiError:
        return ApiError(
            f"{self.title}: listing and redelivering webhook deliveries is not supported"
        )

    def find_hook(self, http: httpx.Client, api: ForgeApi, public_url: str) -> int:
        raise self._refuse()

    def deliveries(
        self, http: httpx.Client, api: ForgeApi, hook_id: int, since: datetime
    ) -> list[Delivery]:
        raise self._refuse()

    def redeliver(
        self, http: httpx.Client, api: ForgeApi, hook_id: int, delivery: Delivery
    ) -> None:
        raise self._refuse()


def comment_id(answer: object, what: str) -> str:
    """The `id` of a created comment in the forge's answer; raises ApiError without one."""
    found = answer.get("id") if isinstance(answer, dict) else None
    if isinstance(found, bool) or not isinstance(found, int | str) or found == "":
        raise ApiError(f"{what}: the answer names no comment id")
    return str(found)


def marked(answer: object, marker: str) -> str | None:
    """The id of the first comment in a list answer whose body holds `marker`, else None."""
    for item in answer if isinstance(answer, list) else []:
        body = item.get("body") if isinstance(item, dict) else None
        if isinstance(body, str) and marker in body and "id" in item:
            return str(item["id"])
    return None


def require(payload: dict[str, Any], path: str, kind: type | tuple[type, ...] = str) -> Any:
    """payload["a"]["b"] for path "a.b", checked for type; raises BadRequest naming the field."""
    node: Any = payload
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise BadRequest(f"missing field '{path}'")
        node = node[part]
    if not isinstance(node, kind) or (kind is str and not node):
        raise BadRequest(f"field '{path}' has the wrong type or is empty")
    return node


def optional(payload: dict[str, Any], path: str) -> Any:
    """payload["a"]["b"] for path "a.b", or None anywhere along the way."""
    node: Any = payload
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def header(headers: Mapping[str, str], *names: str) -> str | None:
    """The first non-empty value among the (lower-case) header `names`, or None."""
    for name in names:
        value = headers.get(name)
        if value:
            return value
    return None


def content_type(headers: Mapping[str, str]) -> str:
    """The media type of the body, lower-case, without parameters ("" when absent)."""
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def json_object(raw: str | bytes) -> dict[str, Any]:
    """The JSON object in `raw`; raises BadRequest when it is not valid JSON or not an object."""
    try:
        # orjson: the webhook hot path parses every body before it can pick the secret.
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    return data


def is_sha(value: object) -> bool:
    """True for a full lower-case hex object id (SHA-1 or SHA-256)."""
    return (
        isinstance(value, str)
        and len(value) in (40, 64)
        and all(c in "0123456789abcdef" for c in value)
    )


def is_zero(value: object) -> bool:
    """True for the all-zeros object id a forge sends for a deleted (or new) ref."""
    return isinstance(value, str) and len(value) in (40, 64) and set(value) == {"0"}


def text(value: object) -> str | None:
    """`value` when it is a string, else None."""
    return value if isinstance(value, str) else None


def pull_number(value: object, field_name: str) -> int:
    """A request number from a payload: a positive whole number; raises BadRequest."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 10**10:
        raise BadRequest(f"field '{field_name}' must be a positive whole number")
    return value


def pull_before(value: object) -> str | None:
    """The previous head a request event names, or None when it names none (or no commit)."""
    return str(value) if is_sha(value) and not is_zero(value) else None


def pull_sha(value: object, field_name: str) -> str:
    """A request's head commit id; raises BadRequest when it is not one."""
    if not is_sha(value):
        raise BadRequest(f"field '{field_name}' is not a commit id")
    return str(value)


def bounded(event: ForgeEvent) -> ForgeEvent:
    """`event` made safe to store; raises BadRequest for a value the schema cannot hold.

    Identity fields and the ref are refused when too long (never cut: they must stay exact);
    free text (author, commit message) is cut to fit and loses NUL characters, which
    PostgreSQL text columns cannot hold; a `before` that is not an object id is dropped.
    """
    pull = event.pull
    if pull is not None:
        for label, value in (
            ("pull request head ref", pull.ref),
            ("base branch", pull.base_branch),
        ):
            if len(value) > MAX_REF or "\x00" in value:
                raise BadRequest(f"{label} is longer than {MAX_REF} characters or holds a NUL")
        title = pull.title.replace("\x00", "") if pull.title else pull.title
        author = pull.author.replace("\x00", "")[:MAX_AUTHOR] if pull.author else pull.author
        event = replace(event, pull=replace(pull, title=title, author=author))
    for label, value, limit in (
        ("event header", event.event, MAX_EVENT),
        ("delivery id", event.delivery_id, MAX_DELIVERY),
        ("hook id", event.hook_id, MAX_HOOK),
    ):
        if len(value) > limit or "\x00" in value:
            raise BadRequest(f"{label} is longer than {limit} characters or holds a NUL")
    push = event.push
    if push is None:
        return event
    if len(push.ref) > MAX_REF or "\x00" in push.ref:
        raise BadRequest(f"field 'ref' is longer than {MAX_REF} characters or holds a NUL")
    author = push.author.replace("\x00", "")[:MAX_AUTHOR] if push.author else push.author
    message = (
        push.commit_message.replace("\x00", "") if push.commit_message else push.commit_message
    )
    before = push.before if is_sha(push.before) else None
    return replace(event, push=replace(push, before=before, author=author, commit_message=message))
