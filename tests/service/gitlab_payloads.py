"""GitLab webhook bodies written here from the documented fields, and their headers.

Fields as documented on docs.gitlab.com (user/project/integrations/webhook_events, "Push events",
"Tag events", "Merge request events") and the delivery headers of the webhooks page.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from tests.conftest import SECRET

REPO = "octo-org/social-score-api"
SUBGROUP_REPO = "octo-org/ml-team/social-score-api"
SHA = "1f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c"
BEFORE = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567"
ZERO = "0" * 40


def _project(repo: str) -> dict[str, Any]:
    return {
        "id": 15,
        "name": repo.rsplit("/", 1)[-1],
        "path_with_namespace": repo,
        "namespace": repo.split("/", 1)[0],
        "default_branch": "main",
        "web_url": f"https://gitlab.example/{repo}",
        "git_http_url": "https://evil.example/attacker.git",
        "git_ssh_url": "git@evil.example:attacker.git",
    }


def push_payload(
    ref: str = "refs/heads/main",
    after: str = SHA,
    repo: str = REPO,
    message: str = "Retrain on new data\n\nMore rows.",
    author: str = "Mona Lisa",
    before: str = BEFORE,
) -> dict[str, Any]:
    """A Push Hook body, or a Tag Push Hook body when `ref` is a tag; `after` zeros deletes."""
    tag = ref.startswith("refs/tags/")
    deleted = after == ZERO
    commits = (
        []
        if deleted or tag
        else [
            {
                "id": BEFORE,
                "message": "Older commit",
                "title": "Older commit",
                "author": {"name": "Someone Else", "email": "else@example.com"},
            },
            {
                "id": after,
                "message": message,
                "title": message.split("\n", 1)[0],
                "timestamp": "2026-01-02T03:04:05+00:00",
                "author": {"name": author, "email": "mona@example.com"},
                "added": ["data/new.csv"],
                "modified": [],
                "removed": [],
            },
        ]
    )
    return {
        "object_kind": "tag_push" if tag else "push",
        "event_name": "tag_push" if tag else "push",
        "before": before,
        "after": after,
        "ref": ref,
        "ref_protected": True,
        "checkout_sha": None if deleted else after,
        "user_id": 4,
        "user_name": author,
        "user_username": "monalisa",
        "user_email": "",
        "project_id": 15,
        "project": _project(repo),
        "repository": {"name": repo.rsplit("/", 1)[-1], "url": "git@evil.example:a.git"},
        "commits": commits,
        "total_commits_count": len(commits),
    }


def merge_request_payload(repo: str = REPO) -> dict[str, Any]:
    """A merge request as a Note Hook names it (never built)."""
    return {
        "object_kind": "merge_request",
        "event_type": "merge_request",
        "user": {"name": "Mona Lisa", "username": "monalisa"},
        "project": _project(repo),
        "object_attributes": {"iid": 1, "source_branch": "feature", "target_branch": "main"},
    }


def system_project_payload(repo: str = REPO) -> dict[str, Any]:
    """A System Hook `project_create` body: the path is at the top level (never built)."""
    return {
        "event_name": "project_create",
        "name": repo.rsplit("/", 1)[-1],
        "path": repo.rsplit("/", 1)[-1],
        "path_with_namespace": repo,
        "project_id": 74,
        "project_visibility": "private",
    }


def signed(
    body: bytes | dict[str, Any],
    event: str = "Push Hook",
    delivery: str | None = None,
    secret: str = SECRET,
    content_type: str = "application/json",
) -> tuple[bytes, dict[str, str]]:
    """The body and the headers GitLab sends with it (token verbatim, fresh webhook UUID)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    key = delivery or str(uuid.uuid4())
    headers = {
        "Content-Type": content_type,
        "User-Agent": "GitLab/17.5.0",
        "X-Gitlab-Event": event,
        "X-Gitlab-Token": secret,
        "Idempotency-Key": key,
        "X-Gitlab-Event-UUID": str(uuid.uuid4()),
        "X-Gitlab-Webhook-UUID": str(uuid.uuid4()),  # random on every request, retries too
        "X-Gitlab-Instance": "https://gitlab.example",
    }
    return raw, headers
