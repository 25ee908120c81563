"""One kit per webhook route: its payload builders, its signer and what its forge documents.

The provider contract suite (test_forges.py) runs every test over every kit, so a forge is
tested by the same questions as the others, asked in its own words.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from starlette.testclient import TestClient

from tests.conftest import SECRET
from tests.service import gitea_payloads, github_payloads, gitlab_payloads

REPO = "octo-org/social-score-api"
SHA = "1f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c"
BEFORE = github_payloads.BEFORE
ZERO = "0" * 40
MESSAGE = "Retrain on new data\n\nMore rows."
AUTHOR = "Mona Lisa"

Payload = dict[str, Any]
Signed = tuple[bytes, dict[str, str]]


@dataclass(frozen=True)
class SharedFixture:
    """A published payload under ../shared/fixtures/webhooks/<folder>/ and its documented answer."""

    filename: str
    event: str
    branches: tuple[str, ...]
    status: int
    answer: str  # the "status" of the answer; "" for a refusal (4xx)
    sha: str | None = None  # the commit a queued build must carry


@dataclass(frozen=True)
class Kit:
    """What the contract suite needs to speak to one route."""

    route: str
    provider: str
    build_push: Callable[..., Payload]
    build_sign: Callable[..., Signed]
    push_event: str
    tag_event: str
    ignorable: tuple[tuple[str, Callable[[], Payload]], ...]
    signature_headers: tuple[str, ...]
    delivery_headers: tuple[str, ...]
    event_headers: tuple[str, ...]
    body_signed: bool = True  # False: a bearer token, the body itself is not covered
    folder: str = ""
    fixtures: tuple[SharedFixture, ...] = field(default=())

    @property
    def url(self) -> str:
        return f"/webhooks/{self.route}"

    def push(
        self,
        ref: str = "refs/heads/main",
        after: str = SHA,
        repo: str = REPO,
        message: str = MESSAGE,
        author: str = AUTHOR,
    ) -> Payload:
        """A push of `after` to `ref` in this forge's words (`after` all zeros: deletion)."""
        return self.build_push(ref=ref, after=after, repo=repo, message=message, author=author)

    def sign(
        self,
        body: bytes | Payload,
        event: str | None = None,
        delivery: str | None = None,
        secret: str = SECRET,
        **kw: Any,
    ) -> Signed:
        """The raw body and the headers this forge sends with it, signed with `secret`."""
        return self.build_sign(body, event or self.push_event, delivery, secret, **kw)


def _github_push(ref: str, after: str, repo: str, message: str, author: str) -> Payload:
    if after == ZERO:
        return github_payloads.push_payload(
            ref=ref, after=after, repo=repo, deleted=True, head_commit=None, commits=[]
        )
    head = {"id": after, "message": message, "author": {"name": author, "email": "m@x.org"}}
    return github_payloads.push_payload(ref=ref, after=after, repo=repo, head_commit=head)


def _github_sign(body: Any, event: str, delivery: str | None, secret: str, **kw: Any) -> Signed:
    return github_payloads.signed(body, event=event, delivery=delivery, secret=secret, **kw)


def _gitlab_sign(body: Any, event: str, delivery: str | None, secret: str, **kw: Any) -> Signed:
    return gitlab_payloads.signed(body, event=event, delivery=delivery, secret=secret, **kw)


def _gitea_signer(flavour: str) -> Callable[..., Signed]:
    def sign(body: Any, event: str, delivery: str | None, secret: str, **kw: Any) -> Signed:
        return gitea_payloads.signed(
            body, event=event, delivery=delivery, secret=secret, flavour=flavour, **kw
        )

    return sign


GITHUB = Kit(
    route="github",
    provider="github",
    build_push=_github_push,
    build_sign=_github_sign,
    push_event="push",
    tag_event="push",
    ignorable=(
        ("ping", github_payloads.ping_payload),
        ("issues", github_payloads.push_payload),
        ("create", github_payloads.push_payload),
    ),
    signature_headers=("X-Hub-Signature-256",),
    delivery_headers=("X-GitHub-Delivery",),
    event_headers=("X-GitHub-Event",),
    folder="github",
    fixtures=(
        SharedFixture("push.payload.json", "push", ("master",), 200, "ignored"),  # tag deletion
        SharedFixture("push.with-organization.payload.json", "push", ("master",), 200, "ignored"),
        SharedFixture(
            "push.with-new-branch.payload.json",
            "push",
            ("master",),
            202,
            "queued",
            "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
        ),
        SharedFixture("push.with-new-branch.payload.json", "push", ("main",), 200, "ignored"),
        SharedFixture("ping.payload.json", "ping", ("master",), 200, "ignored"),
        # An organization hook names no repository, so no secret can be chosen: refused.
        SharedFixture("ping.with-organization.payload.json", "ping", ("master",), 400, ""),
    ),
)

GITLAB = Kit(
    route="gitlab",
    provider="gitlab",
    build_push=gitlab_payloads.push_payload,
    build_sign=_gitlab_sign,
    push_event="Push Hook",
    tag_event="Tag Push Hook",
    ignorable=(
        # A Merge Request Hook builds (tests/service/test_pull_requests.py); a note on one
        # does not.
        ("Note Hook", gitlab_payloads.merge_request_payload),
        ("System Hook", gitlab_payloads.push_payload),  # a system hook's push: not built
        ("System Hook", gitlab_payloads.system_project_payload),
    ),
    signature_headers=("X-Gitlab-Token",),
    delivery_headers=("Idempotency-Key", "X-Gitlab-Event-UUID"),
    event_headers=("X-Gitlab-Event",),
    body_signed=False,
    folder="gitlab",
    fixtures=(
        SharedFixture(
            "push.gitlab-docs.json",
            "Push Hook",
            ("master",),
            202,
            "queued",
            "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
        ),
        SharedFixture("push.gitlab-docs.json", "Push Hook", ("main",), 200, "ignored"),
        # A push body under the merge request event names no request: refused, nothing built.
        SharedFixture("push.gitlab-docs.json", "Merge Request Hook", ("master",), 400, ""),
    ),
)


def _gitea_kit(flavour: str) -> Kit:
    gitea_docs = "push.gitea-docs.json"
    return Kit(
        route=flavour,
        provider=flavour,
        build_push=gitea_payloads.push_payload,
        build_sign=_gitea_signer(flavour),
        push_event="push",
        tag_event="push",
        ignorable=(
            ("create", gitea_payloads.push_payload),
            ("delete", gitea_payloads.push_payload),
            ("issues", gitea_payloads.issues_payload),
        ),
        signature_headers=("X-Gitea-Signature", "X-Forgejo-Signature"),
        delivery_headers=("X-Gitea-Delivery", "X-Forgejo-Delivery"),
        event_headers=("X-Gitea-Event", "X-Forgejo-Event"),
        folder="gitea",
        fixtures=(
            SharedFixture(
                gitea_docs,
                "push",
                ("develop",),
                202,
                "queued",
                "bffeb74224043ba2feb48d137756c8a9331c449a",
            ),
            SharedFixture(gitea_docs, "push", ("main",), 200, "ignored"),
            SharedFixture(gitea_docs, "create", ("develop",), 200, "ignored"),
        ),
    )


GITEA = _gitea_kit("gitea")
FORGEJO = _gitea_kit("forgejo")
KITS = (GITHUB, GITLAB, GITEA, FORGEJO)


def post(client: TestClient, kit: Kit, signed: Signed) -> tuple[int, dict[str, Any]]:
    """POST a signed delivery to the kit's route: (status code, JSON answer)."""
    response = client.post(kit.url, content=signed[0], headers=signed[1])
    return response.status_code, response.json()


def without(signed: Signed, *names: str) -> Signed:
    """The same delivery without the headers `names`."""
    raw, headers = signed
    return raw, {k: v for k, v in headers.items() if k not in names}


def paths(node: object, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every key path of a payload, descending into the objects a forge adapter reads."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            if key in ("repository", "project", "head_commit", "pusher"):
                yield from paths(value, (*prefix, key))


def removed(payload: Payload, path: tuple[str, ...]) -> Payload:
    """A deep copy of `payload` without the key at `path`."""
    copy = json.loads(json.dumps(payload))
    node = copy
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return copy
