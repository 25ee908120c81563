"""The provider seam: what every forge adapter turns its webhook into, and the errors it raises."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

ZERO_SHA = "0" * 40


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

    @property
    def branch(self) -> str | None:
        """The branch name for `refs/heads/...`, else None (tags and other refs)."""
        prefix = "refs/heads/"
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
