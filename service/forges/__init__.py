"""The provider seam: what every forge adapter turns its webhook into, and the errors it raises."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

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


@dataclass(frozen=True)
class ForgeEvent:
    """One verified delivery: its identity, its event name and, for pushes, the push."""

    event: str
    delivery_id: str
    hook_id: str
    push: Push | None = None


class Forge(Protocol):
    """A webhook provider. Every method is pure (no I/O) and safe to call on untrusted input."""

    name: str

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
        """The delivery's identity and, for a push, the neutral Push; raises BadRequest."""
        ...


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


def bounded(event: ForgeEvent) -> ForgeEvent:
    """`event` made safe to store; raises BadRequest for a value the schema cannot hold.

    Identity fields and the ref are refused when too long (never cut: they must stay exact);
    free text (author, commit message) is cut to fit and loses NUL characters, which
    PostgreSQL text columns cannot hold; a `before` that is not an object id is dropped.
    """
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
