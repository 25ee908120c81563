"""The webhook's fast path for path filters: the changed files a push payload lists, when the
list is known to be complete.

The truth is the diff between `before` and `after` (see worker/difffilter.py); the payload is a
shortcut that lets the service answer `ignored` without a mirror. It is used only when it
cannot be smaller than that diff: every pushed commit is listed, each with its `added`,
`removed` and `modified` files, and the union of those covers every file the diff can hold.
In every other case the answer is None and the worker decides from the mirror:

- a new branch (`before` all zeros): forges list different commits for it; the worker
  compares with the default branch;
- GitHub: a forced push (`forced` is not false: commits dropped by the rewrite are in the
  diff but not in the list), or 2048 commits or more;
- GitLab: `total_commits_count` larger than the list (GitLab keeps the 20 newest commits);
- Gitea / Forgejo: `total_commits` absent or larger than the list (Gitea keeps a few newest);
- any commit without its three file lists, or a list of 1000 files or more (forges cap huge
  lists; there is no need to trust where);
- a path holding a NUL: no git path can, so the list is not what git changed (and the
  reason naming it could not be stored: PostgreSQL text refuses NUL).

GitLab and Gitea do not say whether a push was forced. Their list holds the commits in
`before..after`; after a force push that dropped commits, a file those commits changed is in
the diff but may be in no listed commit. See the module docs of worker/difffilter.py.
"""

from __future__ import annotations

from typing import Any

from service.forges import is_sha, is_zero
from service.forges.registry import forge_for

MAX_FILES = 1000


def payload_files(provider: str, payload: dict[str, Any]) -> frozenset[str] | None:
    """Every file the push changed, from the payload's commit lists; None when the payload
    cannot tell for sure (then the worker decides from the mirror)."""
    before = payload.get("before")
    if not is_sha(before) or is_zero(before):
        return None
    commits = payload.get("commits")
    if not isinstance(commits, list) or not commits:
        return None
    forge = forge_for(provider)
    if forge is None or not forge.lists_every_commit(payload, len(commits)):
        return None
    files: set[str] = set()
    for commit in commits:
        if not isinstance(commit, dict):
            return None
        for key in ("added", "removed", "modified"):
            listed = commit.get(key)
            if not isinstance(listed, list) or len(listed) >= MAX_FILES:
                return None
            if not all(isinstance(path, str) and path and "\x00" not in path for path in listed):
                return None
            files.update(listed)
    return frozenset(files)
