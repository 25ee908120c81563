"""Gitea / Forgejo webhook bodies written here from the documented fields, and their headers.

Fields as documented on docs.gitea.com/usage/webhooks (push event) and Forgejo's webhooks page;
headers as Gitea and Forgejo send them, compatibility copies (X-Gogs-*, X-GitHub-*, X-Hub-*)
included, so that tests see what a real delivery carries.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from typing import Any
from urllib.parse import urlencode

from service.forges.gitea import signature
from tests.conftest import SECRET

REPO = "octo-org/social-score-api"
SHA = "1f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c"
BEFORE = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567"
ZERO = "0" * 40
FORM = "application/x-www-form-urlencoded"


def _user() -> dict[str, Any]:
    return {"id": 1, "login": "monalisa", "full_name": "", "username": "monalisa"}


def push_payload(
    ref: str = "refs/heads/main",
    after: str = SHA,
    repo: str = REPO,
    message: str = "Retrain on new data\n\nMore rows.",
    author: str = "Mona Lisa",
    before: str = BEFORE,
) -> dict[str, Any]:
    """A push event body; `after` all zeros is a deletion."""
    deleted = after == ZERO
    head = {
        "id": after,
        "message": message,
        "url": f"https://gitea.example/{repo}/commit/{after}",
        "author": {"name": author, "email": "mona@example.com", "username": "monalisa"},
        "committer": {"name": author, "email": "mona@example.com", "username": "monalisa"},
        "timestamp": "2026-01-02T03:04:05Z",
        "added": ["data/new.csv"],
        "removed": [],
        "modified": [],
    }
    return {
        "ref": ref,
        "before": before,
        "after": after,
        "compare_url": f"https://gitea.example/{repo}/compare/{before}...{after}",
        "commits": [] if deleted else [head],
        "total_commits": 0 if deleted else 1,
        "head_commit": None if deleted else head,
        "repository": {
            "id": 140,
            "owner": _user(),
            "name": repo.split("/")[-1],
            "full_name": repo,
            "clone_url": "https://evil.example/attacker.git",
            "default_branch": "main",
        },
        "pusher": _user(),
        "sender": _user(),
    }


def issues_payload(repo: str = REPO) -> dict[str, Any]:
    """An issues event body (never built)."""
    return {
        "action": "opened",
        "number": 1,
        "issue": {"id": 1, "title": "Accuracy dropped"},
        "repository": {"id": 140, "full_name": repo},
        "sender": _user(),
    }


def signed(
    body: bytes | dict[str, Any],
    event: str = "push",
    delivery: str | None = None,
    secret: str = SECRET,
    content_type: str = "application/json",
    flavour: str = "gitea",
) -> tuple[bytes, dict[str, str]]:
    """The body and every header Gitea (or Forgejo, `flavour="forgejo"`) sends with it.

    With the form content type the body is `payload=<json>` and, as Gitea does, the
    signatures are over the JSON, not over the form body.
    """
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    raw = urlencode({"payload": content.decode()}).encode() if content_type == FORM else content
    key = delivery or str(uuid.uuid4())
    sig = signature(secret, content)
    sha1 = hmac.new(secret.encode(), content, hashlib.sha1).hexdigest()
    headers = {"Content-Type": content_type, "User-Agent": "Go-http-client/1.1"}
    prefixes = ["X-Forgejo", "X-Gitea"] if flavour == "forgejo" else ["X-Gitea"]
    for prefix in [*prefixes, "X-Gogs"]:
        headers[f"{prefix}-Delivery"] = key
        headers[f"{prefix}-Event"] = event
        headers[f"{prefix}-Event-Type"] = event
        headers[f"{prefix}-Signature"] = sig
    headers.update(
        {
            "X-GitHub-Delivery": key,
            "X-GitHub-Event": event,
            "X-GitHub-Event-Type": event,
            "X-Hub-Signature": "sha1=" + sha1,
            "X-Hub-Signature-256": "sha256=" + sig,
        }
    )
    return raw, headers
