"""Accepting a webhook delivery: verify, decide, and record it with its build in one transaction."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from service.forges import Forge, ForgeEvent, NotConfigured, PullRequest, Unauthorized, bounded
from service.forges.payloadfilter import payload_files
from service.intake import Incoming
from service.writer import DeliveryWriter
from trainhook.builds import BuildSpec, Delivery
from trainhook.repos import RepoConfig
from trainhook.runtime import Runtime

log = logging.getLogger(__name__)

# Never stored: these carry credentials on some forges.
SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "x-gitlab-token"})


@dataclass(frozen=True)
class Answer:
    """The HTTP answer to a delivery."""

    status: int
    body: dict[str, Any]


def pull_ignore_reason(repo: RepoConfig, pull: PullRequest) -> str | None:
    """Why a pull/merge request event builds nothing, or None when it should build.

    A close is answered here too (its builds are ended by the writer, see
    service/intake.py); a fork's request builds only under `pull_requests = "all"`."""
    what = f"pull request #{pull.number}"
    if repo.pull_requests == "off":
        return f'{what}: pull requests are not built (pull_requests = "off")'
    if pull.action == "close":
        return f"{what} {pull.verb}: its queued and running builds are superseded"
    if pull.action != "build":
        return f"{what}: action {pull.verb!r} does not build (only new or reopened heads)"
    if not repo.wants_branch(pull.base_branch):
        return (
            f"{what} targets branch {pull.base_branch!r}, which is not configured "
            f"(branches = {list(repo.branches)})"
        )
    if not pull.same_repo and repo.pull_requests != "all":
        source = repr(pull.head_repo) if pull.head_repo else "a deleted fork"
        return (
            f"{what} comes from the fork {source}: code from forks is not built "
            f'(pull_requests = {repo.pull_requests!r}; "all" builds it, sandboxed)'
        )
    return None


def ignore_reason(repo: RepoConfig, event: ForgeEvent) -> str | None:
    """Why a verified delivery builds nothing, or None when it should build."""
    if event.pull is not None:
        return pull_ignore_reason(repo, event.pull)
    push = event.push
    if push is None:
        if event.event == "ping":
            return "ping: webhook is set up"
        return f"event {event.event!r} is not built (only pushes and pull requests)"
    if push.deleted:
        return f"{push.ref} was deleted"
    tag = push.tag
    if tag is not None:
        if not repo.tags:
            return f"tag {tag!r}: tags are not built (no tags = [...] for this repository)"
        if not repo.wants_tag(tag):
            return f"tag {tag!r} is not configured (tags = {list(repo.tags)})"
        return None
    branch = push.branch
    if branch is None:
        return f"{push.ref} is not a branch or a tag"
    if not repo.wants_branch(branch):
        return f"branch {branch!r} is not configured (branches = {list(repo.branches)})"
    if push.files is not None:
        # Known from the payload; otherwise the worker decides from the mirror's diff.
        return repo.path_filter.ignore_reason(push.files)
    return None


def verify(
    runtime: Runtime, forge: Forge, headers: Mapping[str, str], body: bytes
) -> tuple[RepoConfig, ForgeEvent]:
    """The configured repository and the verified event; raises a WebhookError otherwise.

    The body is parsed only as far as the repository name before the signature holds.
    """
    payload = forge.payload(headers, body)
    name = forge.repo_name(payload)
    repo = runtime.settings.repo(name, forge.name)
    if repo is None:
        raise NotConfigured(f"repository {name!r} is not configured for {forge.name}")
    secret = runtime.settings.secret_for(repo)
    if not secret:
        raise Unauthorized(f"no webhook secret is set for {name!r} ({repo.secret_env})")
    forge.verify(headers, body, secret)
    event = bounded(forge.event(headers, payload))
    if event.push is not None and repo.path_filter.active:
        event = replace(event, push=replace(event.push, files=payload_files(forge.name, payload)))
    return repo, event


def incoming(
    forge: Forge,
    repo: RepoConfig,
    event: ForgeEvent,
    headers: Mapping[str, str],
    body: bytes,
    received_at: datetime,
) -> Incoming:
    """The delivery to store and, when it builds, the build it asks for."""
    reason = ignore_reason(repo, event)
    delivery = Delivery(
        provider=forge.name,
        hook_id=event.hook_id,
        delivery_id=event.delivery_id,
        event=event.event,
        repo=repo.name,
        headers={k: v for k, v in headers.items() if k.lower() not in SECRET_HEADERS},
        body=body,
        received_at=received_at,
    )
    spec = None
    pull = event.pull
    if pull is not None:
        # A new head supersedes the request's older builds, a close all of them; an
        # ignored event of a request that still builds (an edit) leaves them alone.
        ends = pull.ref if reason is None or pull.action == "close" else None
        if repo.pull_requests == "off":
            ends = None
        if reason is None:
            spec = BuildSpec(
                provider=forge.name,
                repo=repo.name,
                ref=pull.ref,
                sha=pull.sha,
                before_sha=pull.before,  # the request's new commits: its path filter
                trigger="pull_request",
                commit_message=pull.title,
                author=pull.author,
            )
        return Incoming(delivery=delivery, spec=spec, reason=reason, supersedes=ends)
    if reason is None:
        assert event.push is not None
        push = event.push
        spec = BuildSpec(
            provider=forge.name,
            repo=repo.name,
            ref=push.ref,
            sha=push.after,
            before_sha=push.before,
            commit_message=push.commit_message,
            author=push.author,
        )
    return Incoming(delivery=delivery, spec=spec, reason=reason)


async def record(runtime: Runtime, writer: DeliveryWriter, item: Incoming) -> Answer:
    """Store the delivery (and its build, stage events and job when it builds) in ONE
    transaction, shared with other deliveries arriving at the same time (group commit).

    A redelivery (same provider, hook and delivery id) answers `duplicate` and builds nothing.
    Raises DatabaseUnavailable when the database cannot be reached: nothing is then stored.
    """
    result = await writer.record(item)
    if result.build_id is None:
        return Answer(200, {"status": "ignored", "reason": result.reason})
    if result.duplicate:
        return Answer(200, {"status": "duplicate", "build_id": result.build_id})
    runtime.queue.notify([result.build_id])
    build_id = result.build_id
    return Answer(
        202, {"status": "queued", "build_id": build_id, "status_url": f"/builds/{build_id}"}
    )
