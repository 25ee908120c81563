"""GitHub webhook bodies written here from the documented fields, and their headers."""

from __future__ import annotations

import json
import uuid
from typing import Any

from service.forges.github import signature
from tests.conftest import SECRET

REPO = "octo-org/social-score-api"
SHA = "1f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c"
BEFORE = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567"


def push_payload(
    ref: str = "refs/heads/main", after: str = SHA, repo: str = REPO, **extra: Any
) -> dict[str, Any]:
    """A push as documented at docs.github.com (webhook events: push)."""
    payload: dict[str, Any] = {
        "ref": ref,
        "before": BEFORE,
        "after": after,
        "created": False,
        "deleted": False,
        "forced": False,
        "base_ref": None,
        "compare": f"https://github.com/{repo}/compare/{BEFORE[:12]}...{after[:12]}",
        "commits": [{"id": after, "message": "Retrain on new data", "distinct": True}],
        "head_commit": {
            "id": after,
            "message": "Retrain on new data\n\nMore rows.",
            "author": {"name": "Mona Lisa", "email": "mona@example.com"},
        },
        "repository": {
            "id": 1296269,
            "name": repo.split("/")[1],
            "full_name": repo,
            "clone_url": "https://evil.example/attacker.git",
        },
        "pusher": {"name": "monalisa", "email": "mona@example.com"},
        "sender": {"login": "monalisa"},
    }
    payload.update(extra)
    return payload


def ping_payload(repo: str = REPO) -> dict[str, Any]:
    return {
        "zen": "Keep it logically awesome.",
        "hook_id": 42,
        "hook": {"type": "Repository", "id": 42, "events": ["push"]},
        "repository": {"full_name": repo},
        "sender": {"login": "monalisa"},
    }


def signed(
    body: bytes | dict[str, Any],
    event: str = "push",
    delivery: str | None = None,
    secret: str = SECRET,
    content_type: str = "application/json",
) -> tuple[bytes, dict[str, str]]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {
        "Content-Type": content_type,
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "42",
        "X-Hub-Signature-256": signature(secret, raw),
        "User-Agent": "GitHub-Hookshot/test",
    }
    return raw, headers
