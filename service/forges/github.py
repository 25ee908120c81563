"""GitHub webhooks: X-Hub-Signature-256 over the raw body, JSON or form-encoded `payload=`."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from service.forges import (
    ZERO_SHA,
    BadRequest,
    ForgeEvent,
    Push,
    Unauthorized,
    content_type,
    json_object,
    optional,
    require,
)


def signature(secret: str, body: bytes) -> str:
    """The `X-Hub-Signature-256` value GitHub sends for `body`."""
    # hmac.digest is the one-shot C path: several times cheaper than hmac.new per request.
    return "sha256=" + hmac.digest(secret.encode(), body, "sha256").hex()


class GitHub:
    """The GitHub adapter (https://docs.github.com/en/webhooks)."""

    name = "github"

    def payload(self, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        ctype = content_type(headers)
        if ctype == "application/x-www-form-urlencoded":
            try:
                form = parse_qs(body.decode("ascii"), strict_parsing=True)
            except (UnicodeDecodeError, ValueError):
                raise BadRequest("form body is not valid url-encoding") from None
            values = form.get("payload")
            if not values or len(values) != 1:
                raise BadRequest("form body must carry exactly one 'payload' field")
            raw: str | bytes = values[0]
        elif ctype in ("application/json", ""):
            raw = body
        else:
            raise BadRequest(
                f"unsupported content type {ctype!r}: use application/json or "
                "application/x-www-form-urlencoded"
            )
        return json_object(raw)

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
            commit_message=_text(optional(head, "message")) if isinstance(head, dict) else None,
            author=_text(optional(head, "author.name") if isinstance(head, dict) else None)
            or _text(optional(payload, "pusher.name")),
        )
        if not deleted and not _is_sha(after):
            raise BadRequest("field 'after' is not a commit id")
        return ForgeEvent(event=event, delivery_id=delivery, hook_id=hook_id[:64], push=push)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _is_sha(value: str) -> bool:
    return len(value) in (40, 64) and all(c in "0123456789abcdef" for c in value)
