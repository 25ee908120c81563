"""Pull and merge requests through every webhook route: what builds, what is ignored and
why, and which builds a newer head or a close supersedes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from service.app import create_app
from tests.conftest import SECRET
from tests.service import gitea_payloads, github_payloads, gitlab_payloads, pull_payloads
from tests.service.pull_payloads import HEAD, NEWER
from trainhook.builds import BuildSpec, create_build, mark_finished
from trainhook.buildview import get_build
from trainhook.errors import ConfigError
from trainhook.models import builds
from trainhook.runtime import Runtime, build_runtime
from trainhook.settings import Settings

Payload = dict[str, Any]


@dataclass(frozen=True)
class Forge:
    route: str
    event: str
    payload: Callable[..., Payload]
    sign: Callable[..., tuple[bytes, dict[str, str]]]
    opened: str
    pushed: dict[str, Any]  # the action (and fields) of new commits on the request
    closed: str
    edited: str
    ref: str  # the head ref of request 7

    def body(self, action: str | None = None, **kw: Any) -> Payload:
        return self.payload(action=action or self.opened, **kw)

    def newer(self, sha: str) -> Payload:
        return self.payload(sha=sha, **self.pushed)


def _gitea_sign(flavour: str) -> Callable[..., tuple[bytes, dict[str, str]]]:
    def sign(body: Payload, event: str) -> tuple[bytes, dict[str, str]]:
        return gitea_payloads.signed(body, event=event, secret=SECRET, flavour=flavour)

    return sign


FORGES = [
    Forge("github", "pull_request", pull_payloads.github,
          lambda body, event: github_payloads.signed(body, event=event, secret=SECRET),
          "opened", {"action": "synchronize", "before": HEAD}, "closed", "edited",
          "refs/pull/7/head"),
    Forge("gitlab", "Merge Request Hook", pull_payloads.gitlab,
          lambda body, event: gitlab_payloads.signed(body, event=event, secret=SECRET),
          "open", {"action": "update", "oldrev": HEAD}, "close", "update",
          "refs/merge-requests/7/head"),
    Forge("gitea", "pull_request", pull_payloads.gitea, _gitea_sign("gitea"),
          "opened", {"action": "synchronized"}, "closed", "edited", "refs/pull/7/head"),
    Forge("forgejo", "pull_request", pull_payloads.gitea, _gitea_sign("forgejo"),
          "opened", {"action": "synchronized"}, "closed", "edited", "refs/pull/7/head"),
]  # fmt: skip


@pytest.fixture(params=FORGES, ids=[f.route for f in FORGES])
def forge(request: pytest.FixtureRequest) -> Forge:
    return request.param


def _app(
    make_settings: Callable[..., Settings], db_url: str, engine: sa.Engine, forge: Forge, extra=""
) -> tuple[TestClient, Runtime]:
    settings = make_settings(db_url, provider=forge.route, extra=extra)
    runtime = build_runtime(settings, engine)
    return TestClient(create_app(runtime), raise_server_exceptions=False), runtime


def _post(client: TestClient, forge: Forge, payload: Payload) -> tuple[int, dict[str, Any]]:
    body, headers = forge.sign(payload, forge.event)
    response = client.post(f"/webhooks/{forge.route}", content=body, headers=headers)
    return response.status_code, response.json()


def _build(engine: sa.Engine, build_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        found = get_build(conn, build_id)
    assert found is not None
    return found


def test_an_opened_request_from_the_repository_queues_a_build_of_its_head_ref(
    forge, make_settings, db_url, engine
):
    client, _ = _app(make_settings, db_url, engine, forge)
    with client:
        status, answer = _post(client, forge, forge.body())
    assert status == 202, answer
    build = _build(engine, answer["build_id"])
    assert (build["trigger"], build["ref"], build["sha"]) == ("pull_request", forge.ref, HEAD)


def test_a_fork_request_is_ignored_under_same_repo_saying_why(forge, make_settings, db_url, engine):
    client, _ = _app(make_settings, db_url, engine, forge)
    with client:
        status, answer = _post(client, forge, forge.body(fork="mallory/social-score-api"))
    assert (status, answer["status"]) == (200, "ignored")
    assert "pull request #7 comes from the fork" in answer["reason"]
    assert 'pull_requests = "same-repo"' in answer["reason"].replace("'", '"')
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(builds)).scalar() == 0


def test_a_fork_request_builds_when_the_repository_says_all(forge, make_settings, db_url, engine):
    client, _ = _app(make_settings, db_url, engine, forge, extra='pull_requests = "all"')
    with client:
        status, answer = _post(client, forge, forge.body(fork="mallory/social-score-api"))
    assert status == 202, answer


def test_requests_are_ignored_when_the_repository_turns_them_off(
    forge, make_settings, db_url, engine
):
    client, _ = _app(make_settings, db_url, engine, forge, extra='pull_requests = "off"')
    with client:
        status, answer = _post(client, forge, forge.body())
    assert (status, answer["status"]) == (200, "ignored")
    assert (
        answer["reason"] == 'pull request #7: pull requests are not built (pull_requests = "off")'
    )


def test_a_request_into_an_unconfigured_branch_is_ignored(forge, make_settings, db_url, engine):
    client, _ = _app(make_settings, db_url, engine, forge)
    with client:
        status, answer = _post(client, forge, forge.body(base="experiments"))
    assert (status, answer["status"]) == (200, "ignored")
    assert "targets branch 'experiments', which is not configured" in answer["reason"]


def test_an_edit_without_new_commits_builds_nothing(forge, make_settings, db_url, engine):
    client, _ = _app(make_settings, db_url, engine, forge)
    with client:
        status, answer = _post(client, forge, forge.body(action=forge.edited))
    assert (status, answer["status"]) == (200, "ignored")
    assert f"action {forge.edited!r} does not build" in answer["reason"]


def test_a_newer_head_supersedes_the_older_build_of_the_request(
    forge, make_settings, db_url, engine
):
    client, _ = _app(make_settings, db_url, engine, forge)
    with client:
        _, first = _post(client, forge, forge.body())
        status, second = _post(client, forge, forge.newer(NEWER))
    assert status == 202, second
    old, new = _build(engine, first["build_id"]), _build(engine, second["build_id"])
    assert (old["status"], new["status"], new["sha"]) == ("superseded", "queued", NEWER)
    queued = next(s for s in old["stages"] if s["name"] == "queued")
    assert queued["status"] == "skipped"
    assert f"superseded by build #{second['build_id']}" in queued["detail"]


def test_new_commits_on_a_request_carry_the_previous_head_where_the_forge_names_it(
    forge, make_settings, db_url, engine
):
    # The path filters read the request's new commits, previous head..new head, at checkout;
    # Gitea and Forgejo name no previous head (the request then builds whatever it changed).
    client, _ = _app(make_settings, db_url, engine, forge)
    with client:
        _, opened = _post(client, forge, forge.body())
        status, pushed = _post(client, forge, forge.newer(NEWER))
    assert status == 202, pushed
    assert _build(engine, opened["build_id"])["before_sha"] is None
    named = {"github": HEAD, "gitlab": HEAD, "gitea": None, "forgejo": None}[forge.route]
    assert _build(engine, pushed["build_id"])["before_sha"] == named


def test_closing_the_request_supersedes_its_queued_builds_and_no_other(
    forge, make_settings, db_url, engine
):
    client, _ = _app(make_settings, db_url, engine, forge)
    with engine.begin() as conn:
        branch = create_build(conn, BuildSpec(forge.route, pull_payloads.REPO, "refs/heads/main",
                                              HEAD))  # fmt: skip
        other = create_build(conn, BuildSpec(forge.route, pull_payloads.REPO,
                                             forge.ref.replace("/7/", "/8/"), HEAD,
                                             trigger="pull_request"))  # fmt: skip
    with client:
        _, opened = _post(client, forge, forge.body())
        status, answer = _post(client, forge, forge.body(action=forge.closed))
    assert (status, answer["status"]) == (200, "ignored")
    assert answer["reason"].startswith(f"pull request #7 {forge.closed}")
    assert _build(engine, opened["build_id"])["status"] == "superseded"
    assert _build(engine, branch)["status"] == "queued"
    assert _build(engine, other)["status"] == "queued"


def test_a_finished_request_build_is_left_alone_by_a_newer_head(
    forge, make_settings, db_url, engine
):
    client, _ = _app(make_settings, db_url, engine, forge)
    with client:
        _, first = _post(client, forge, forge.body())
        with engine.begin() as conn:
            mark_finished(conn, first["build_id"], "succeeded")
        _post(client, forge, forge.newer(NEWER))
    assert _build(engine, first["build_id"])["status"] == "succeeded"


@pytest.mark.parametrize("sha", ["", "not-a-sha", "A" * 40])
def test_a_request_without_a_head_commit_id_is_a_400_naming_the_field(
    forge, make_settings, db_url, engine, sha
):
    client, _ = _app(make_settings, db_url, engine, forge)
    with client:
        status, answer = _post(client, forge, forge.body(sha=sha))
    assert status == 400
    assert "head" in answer["error"] or "last_commit" in answer["error"]


def test_all_with_sandbox_off_is_refused_at_start_naming_file_repo_and_key(make_settings, tmp_path):
    with pytest.raises(ConfigError) as caught:
        make_settings(extra='pull_requests = "all"\nsandbox = false')
    message = str(caught.value)
    assert str(Path(tmp_path / "trainhook.toml")) in message
    assert "'octo-org/social-score-api'" in message
    assert "key 'pull_requests'" in message and "sandbox = false" in message


def test_an_unknown_pull_requests_value_is_refused_with_the_choices(make_settings):
    with pytest.raises(ConfigError, match=r"key 'pull_requests': 'forks'.*'same-repo'"):
        make_settings(extra='pull_requests = "forks"')
