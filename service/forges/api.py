"""A forge's REST API, the plumbing every forge shares: the web host behind a clone URL, one
call with its token, and when an answer says "retry".

The base URL comes from the repository's `forge_api_url`, else from the host of its
`clone_url` (service/forges/registry.py:api_base), each forge saying where its API sits on
that host: `https://api.github.com` for github.com (`https://HOST/api/v3` for GitHub
Enterprise), `https://HOST/api/v4` for GitLab, `https://HOST/api/v1` for Gitea and Forgejo.
An http(s) clone URL keeps its scheme and port; an ssh one gives `https://HOST`.

Tokens are sent as each forge documents (GitHub `Authorization: Bearer`, GitLab
`PRIVATE-TOKEN`, Gitea/Forgejo `Authorization: token`), never logged, never put in a message.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from service.forges import ApiError, ForgeApi

TIMEOUT = 10.0
DEFAULT_RETRY = 30.0  # seconds, when a rate-limited answer does not say how long
MAX_RETRY = 3600.0


def web_host(clone_url: str) -> tuple[str, str] | None:
    """(scheme, host[:port]) of the web server behind a clone URL; None for a local path."""
    parts = urlsplit(clone_url)
    if parts.scheme in ("http", "https") and parts.hostname:
        port = f":{parts.port}" if parts.port else ""
        return parts.scheme, parts.hostname + port
    if parts.scheme in ("ssh", "git") and parts.hostname:
        return "https", parts.hostname  # the ssh port says nothing about the web port
    if not parts.scheme and ":" in clone_url and not clone_url.startswith("/"):
        host = clone_url.split(":", 1)[0].rsplit("@", 1)[-1]  # scp-like: git@host:org/repo
        return ("https", host) if host else None
    return None


def owner_repo_path(repo: str) -> str:
    """`/repos/OWNER/NAME`, each part percent-encoded (GitHub, Gitea and Forgejo)."""
    return "/repos/" + "/".join(quote(part, safe="") for part in repo.split("/"))


def retry_delay(response: httpx.Response, now: float | None = None) -> float | None:
    """Seconds to wait before retrying, or None when the answer is final.

    429 and 5xx retry; 403 retries only when it is a rate limit (GitHub's secondary limits
    send `Retry-After`, its primary one `X-RateLimit-Remaining: 0`). The wait is
    `Retry-After` (seconds or a date), else the `X-RateLimit-Reset` / `RateLimit-Reset` epoch,
    else DEFAULT_RETRY; at most MAX_RETRY."""
    status, headers = response.status_code, response.headers
    remaining = headers.get("x-ratelimit-remaining") or headers.get("ratelimit-remaining")
    limited = status == 429 or (status == 403 and ("retry-after" in headers or remaining == "0"))
    if not limited and status < 500:
        return None
    now = time.time() if now is None else now
    delay: float | None = None
    after = headers.get("retry-after")
    if after:
        if after.strip().isdigit():
            delay = float(after.strip())
        else:
            try:
                delay = email.utils.parsedate_to_datetime(after).timestamp() - now
            except (TypeError, ValueError):
                delay = None
    reset = headers.get("x-ratelimit-reset") or headers.get("ratelimit-reset")
    if delay is None and limited and reset and reset.strip().isdigit():
        delay = float(reset) - now
    return min(MAX_RETRY, max(1.0, DEFAULT_RETRY if delay is None else delay))


def check(response: httpx.Response, what: str) -> httpx.Response:
    """`response` when it is a 2xx; raises ApiError naming `what` and the forge's message."""
    if response.is_success:
        return response
    try:
        body = response.json()
        message = (body.get("message") or body.get("error")) if isinstance(body, dict) else None
    except ValueError:
        message = None
    detail = str(message or response.reason_phrase or "")[:300]
    raise ApiError(
        f"{what}: HTTP {response.status_code} {detail}".rstrip(),
        status=response.status_code,
        retry_after=retry_delay(response),
    )


def client() -> httpx.Client:
    """An HTTP client for forge APIs: a short timeout, and no redirects (a redirect could
    carry the token to another host)."""
    return httpx.Client(timeout=TIMEOUT, follow_redirects=False)


def request(
    http: httpx.Client, api: ForgeApi, method: str, url: str, what: str, *, body: Any = None
) -> httpx.Response:
    """One API call (`body` sent as JSON); transport faults become retryable ApiErrors,
    non-2xx answers ApiErrors."""
    try:
        response = http.request(method, url, headers=api.headers(), json=body)
    except httpx.HTTPError as exc:
        reason = f"{type(exc).__name__}: {exc}"[:300]
        raise ApiError(f"{what}: {reason}", retry_after=DEFAULT_RETRY) from None
    return check(response, what)
