"""Pull and merge request webhook bodies, written from the fields each forge documents.

GitHub: docs.github.com, webhook events and payloads, `pull_request` (action, number,
pull_request.head/base with ref, sha and repo). GitLab: docs.gitlab.com, webhook events,
"Merge request events" (object_kind merge_request, object_attributes with iid, action,
source/target project ids and branches, last_commit, oldrev on an update that brought
commits). Gitea and Forgejo: docs.gitea.com, webhooks (the `pull_request` payload: action,
number, pull_request.head/base with ref, sha and repo).
"""

from __future__ import annotations

from typing import Any

REPO = "octo-org/social-score-api"
HEAD = "6dcb09b5b57875f334f61aebed695e2e4193db5e"
NEWER = "7e4a1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b"


def github(
    number: int = 7,
    action: str = "opened",
    sha: str = HEAD,
    fork: str | None = None,
    base: str = "main",
    repo: str = REPO,
    before: str | None = None,
) -> dict[str, Any]:
    """A `pull_request` event; `fork` names the head repository when it is not `repo`;
    `before` is the previous head a `synchronize` names (with `after`, the new one)."""
    head_repo = fork or repo
    pushed = {"before": before, "after": sha} if before else {}
    return {
        "action": action,
        **pushed,
        "number": number,
        "pull_request": {
            "url": f"https://api.github.com/repos/{repo}/pulls/{number}",
            "html_url": f"https://github.com/{repo}/pull/{number}",
            "number": number,
            "state": "closed" if action == "closed" else "open",
            "title": "Add more training rows",
            "user": {"login": "octocat"},
            "merged": False,
            "head": {
                "label": f"{head_repo.split('/')[0]}:new-rows",
                "ref": "new-rows",
                "sha": sha,
                "repo": {"full_name": head_repo, "fork": fork is not None},
            },
            "base": {
                "label": "octo-org:main",
                "ref": base,
                "sha": "9" * 40,
                "repo": {"full_name": repo},
            },
        },
        "repository": {
            "id": 1296269,
            "full_name": repo,
            "clone_url": "https://evil.example/attacker.git",
        },
        "sender": {"login": "octocat"},
    }


def gitlab(
    number: int = 7,
    action: str = "open",
    sha: str = HEAD,
    fork: str | None = None,
    base: str = "main",
    repo: str = REPO,
    oldrev: str | None = None,
) -> dict[str, Any]:
    """A Merge Request Hook; `fork` names the source project when it is not `repo`."""
    target_id, source_id = 14, (15 if fork else 14)
    attrs: dict[str, Any] = {
        "id": 99,
        "iid": number,
        "target_branch": base,
        "source_branch": "new-rows",
        "source_project_id": source_id,
        "target_project_id": target_id,
        "title": "Add more training rows",
        "state": {"close": "closed", "merge": "merged"}.get(action, "opened"),
        "action": action,
        "url": f"https://gitlab.example/{repo}/-/merge_requests/{number}",
        "source": {"path_with_namespace": fork or repo},
        "target": {"path_with_namespace": repo},
        "last_commit": {
            "id": sha,
            "message": "Add more training rows",
            "author": {"name": "Mona Lisa", "email": "mona@example.com"},
        },
    }
    if oldrev:
        attrs["oldrev"] = oldrev
    return {
        "object_kind": "merge_request",
        "event_type": "merge_request",
        "user": {"id": 1, "name": "Mona Lisa", "username": "mona"},
        "project": {
            "id": target_id,
            "path_with_namespace": repo,
            "git_http_url": "https://evil.example/attacker.git",
        },
        "object_attributes": attrs,
        "repository": {"name": "social-score-api"},
    }


def gitea(
    number: int = 7,
    action: str = "opened",
    sha: str = HEAD,
    fork: str | None = None,
    base: str = "main",
    repo: str = REPO,
) -> dict[str, Any]:
    """A `pull_request` event; Gitea names new commits `synchronized`."""
    head_repo = fork or repo
    return {
        "action": action,
        "number": number,
        "pull_request": {
            "id": 31,
            "number": number,
            "html_url": f"https://gitea.example/{repo}/pulls/{number}",
            "title": "Add more training rows",
            "user": {"login": "mona"},
            "state": "closed" if action == "closed" else "open",
            "merged": False,
            "head": {
                "label": "new-rows",
                "ref": "new-rows",
                "sha": sha,
                "repo": {"full_name": head_repo},
            },
            "base": {"label": base, "ref": base, "sha": "9" * 40, "repo": {"full_name": repo}},
        },
        "repository": {
            "id": 1,
            "full_name": repo,
            "clone_url": "https://evil.example/attacker.git",
        },
        "sender": {"login": "mona"},
    }
