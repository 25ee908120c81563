"""A forge's REST API: where it is, how to authenticate, and when an answer says "retry".

The base URL comes from the repository's `forge_api_url`, else from the host of its
`clone_url`: `https://api.github.com` for github.com (`https://HOST/api/v3` for GitHub
Enterprise), `https://HOST/api/v4` for GitLab, `https://HOST/api/v1` for Gitea and Forgejo.
An http(s) clone URL keeps its scheme and port; an ssh one gives `https://HOST`.

Tokens are sent as each forge documents (GitHub `Authorization: Bearer`, GitLab
`PRIVATE-TOKEN`, Gitea/Forgejo `Authorization: token`), never logged, never put in a message.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from trainhook.repos import RepoConfig

TIMEOUT = 10.0
DEFAULT_RETRY = 30.0  # seconds, when a rate-limited answer does not say how long
MAX_RETRY = 3600.0
USER_AGENT = "trainhook"


class ApiError(Exception):
    """A request that did not succeed. `retry_after` is None for a permanent failure (bad
    token, no permission, unknown repository), else the seconds to wait before trying again."""

    def __init__(self, message: str, *, status: int = 0, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def _host(clone_url: str) -> tuple[str, str] | None:
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


def api_base(repo: RepoConfig) -> str | None:
    """The API base URL of a repository's forge (no trailing slash); None when unknown."""
    if repo.forge_api_url:
        return repo.forge_api_url.rstrip("/")
    found = _host(repo.clone_url)
    if found is None:
        return None
    scheme, host = found
    if repo.provider == "github":
        return "https://api.github.com" if host == "github.com" else f"{scheme}://{host}/api/v3"
    if repo.provider == "gitlab":
        return f"{scheme}://{host}/api/v4"
    return f"{scheme}://{host}/api/v1"


@dataclass(frozen=True)
class ForgeApi:
    """One repository's API: its provider, base URL, token and the path that names it."""

    provider: str
    base: str
    repo: str
    token: str = field(repr=False)

    @classmethod
    def of(cls, repo: RepoConfig, token: str | None) -> ForgeApi | None:
        base = api_base(repo)
        if not token or base is None:
            return None
        return cls(repo.provider, base, repo.name, token)

    @property
    def repo_path(self) -> str:
        """`/repos/OWNER/NAME` (GitHub, Gitea), `/projects/GROUP%2FNAME` (GitLab)."""
        if self.provider == "gitlab":
            return "/projects/" + quote(self.repo, safe="")
        return "/repos/" + "/".join(quote(part, safe="") for part in self.repo.split("/"))

    def headers(self) -> dict[str, str]:
        auth = {
            "github": {"Authorization": f"Bearer {self.token}"},
            "gitlab": {"PRIVATE-TOKEN": self.token},
        }.get(self.provider, {"Authorization": f"token {self.token}"})
        extra = (
            {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
            if self.provider == "github"
            else {"Accept": "application/json"}
        )
        return {"User-Agent": USER_AGENT, **extra, **auth}

    def url(self, path: str) -> str:
        return self.base + path

    def same_origin(self, url: str) -> bool:
        """True when `url` (a pagination link, say) is on this API's host: the token is
        never sent anywhere else."""
        a, b = urlsplit(self.base), urlsplit(url)
        return (a.scheme, a.netloc) == (b.scheme, b.netloc)


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
