"""The pull request comment: one per request on every forge, created once, then edited in
place for each newer build, across restarts and replicas, against a real HTTP fake forge."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa

from service.pullcomments import MARKER, PullCommenter
from tests.forges.fakeforge import FakeForge, Seen
from trainhook.builds import BuildSpec, add_event, create_build, mark_finished, mark_started
from trainhook.models import pull_comments
from trainhook.settings import Settings
from trainhook.trainresults import record_train_result

TOKEN = "forge-token-" + "s3cr3t" * 6
PUBLIC = "https://ci.example.org"
REPO = "octo-org/social-score-api"
SUFFIX = {"github": "", "gitlab": "/api/v4", "gitea": "/api/v1"}
# Where each forge creates a comment on request 7 and edits comment 101, as documented.
CREATE = {
    "github": "POST /repos/octo-org/social-score-api/issues/7/comments",
    "gitlab": "POST /api/v4/projects/octo-org%2Fsocial-score-api/merge_requests/7/notes",
    "gitea": "POST /api/v1/repos/octo-org/social-score-api/issues/7/comments",
}
EDIT = {
    "github": "PATCH /repos/octo-org/social-score-api/issues/comments/101",
    "gitlab": "PUT /api/v4/projects/octo-org%2Fsocial-score-api/merge_requests/7/notes/101",
    "gitea": "PATCH /api/v1/repos/octo-org/social-score-api/issues/comments/101",
}
REF = {"github": "refs/pull/7/head", "gitlab": "refs/merge-requests/7/head",
       "gitea": "refs/pull/7/head"}  # fmt: skip
CANDIDATE = {
    "macro_f1": 0.8123,
    "per_class": {"negative": {"f1": 0.8}, "positive": {"f1": 0.82}},
    "confusion_matrix": {"labels": ["negative", "positive"]},
    "rows": {"read": 1000, "used": 990, "train": 792, "validation": 198},
}
DEPLOYED = {
    "macro_f1": 0.7901,
    "per_class": {"negative": {"f1": 0.77}, "positive": {"f1": 0.81}},
    "confusion_matrix": {"labels": ["negative", "positive"]},
    "rows": {"read": 900, "used": 890, "train": 712, "validation": 178},
}


def answers(seen: Seen):
    return (201, {"id": 101}) if seen.method == "POST" else (200, {"id": 101})


@pytest.fixture(params=["github", "gitlab", "gitea"])
def provider(request) -> str:
    return request.param


@pytest.fixture
def settings(make_settings, forge: FakeForge, db_url: str, provider: str) -> Settings:
    forge.handler = answers
    extra = f'forge_token_env = "FORGE_TOKEN"\nforge_api_url = "{forge.url}{SUFFIX[provider]}"'
    env = {"FORGE_TOKEN": TOKEN, "TRAINHOOK_PUBLIC_URL": PUBLIC}
    return make_settings(db_url, provider=provider, name=REPO, extra=extra, env=env)


@pytest.fixture
def pull_build(engine, settings: Settings, provider: str) -> Callable[..., int]:
    def make(sha: str, status: str = "succeeded", trained: bool = True) -> int:
        with engine.begin() as conn:
            spec = BuildSpec(provider=provider, repo=REPO, ref=REF[provider], sha=sha,
                             trigger="pull_request")  # fmt: skip
            build_id = create_build(conn, spec)
            mark_started(conn, build_id)
            add_event(conn, build_id, "hash", "succeeded",
                      detail="model key 3f2a9c0d: miss (data changed: blob 0d1c2b3a)")  # fmt: skip
            if trained:
                add_event(conn, build_id, "train", "running")
                add_event(conn, build_id, "train", "succeeded", cache="miss", detail="trained")
                record_train_result(conn, build_id, CANDIDATE, DEPLOYED, True, "macro_f1 ok")
            mark_finished(conn, build_id, status, None if status == "succeeded" else "boom")
        return build_id

    return make


def writes(forge: FakeForge) -> list[str]:
    return [s.target for s in forge.seen if s.method != "GET"]


def test_first_push_creates_the_comment_and_the_next_edits_it(
    engine, settings, forge, pull_build, provider
):
    commenter = PullCommenter(settings, engine)
    first = pull_build("a" * 40)
    assert commenter.tick() == 1
    assert commenter.tick() == 0  # shown: nothing more to send
    second = pull_build("b" * 40)
    assert commenter.tick() == 1
    assert writes(forge) == [CREATE[provider], EDIT[provider]]
    created, edited = forge.seen
    body = created.body["body"]
    assert body.startswith(MARKER)
    assert f"[build #{first}]({PUBLIC}/builds/{first})" in body
    assert "| macro-F1 | 0.8123 | 0.7901 |" in body
    assert "| F1 negative | 0.8000 | 0.7700 |" in body
    assert "| rows used | 990 | 890 |" in body
    assert "| labels | negative, positive | negative, positive |" in body
    assert "**Quality gate:** passed: macro_f1 ok" in body
    assert "**Model cache:** miss: model key 3f2a9c0d: miss (data changed: blob 0d1c2b3a)" in body
    assert "| train | succeeded |" in body
    assert f"[build #{second}]" in edited.body["body"]
    with engine.connect() as conn:
        row = conn.execute(sa.select(pull_comments)).one()
    assert (row.comment_id, row.build_id, row.posting) == ("101", second, False)


def test_a_restart_between_pushes_edits_the_comment_instead_of_adding_one(
    engine, settings, forge, pull_build, provider
):
    pull_build("a" * 40)
    assert PullCommenter(settings, engine).tick() == 1
    pull_build("b" * 40)
    assert PullCommenter(settings, engine).tick() == 1  # a new process: state from the table
    assert writes(forge) == [CREATE[provider], EDIT[provider]]


def test_two_replicas_send_the_comment_once(engine, settings, forge, pull_build, provider):
    pull_build("a" * 40)
    one, two = PullCommenter(settings, engine), PullCommenter(settings, engine)
    assert one.tick() + two.tick() == 1
    assert writes(forge) == [CREATE[provider]]


def test_a_create_whose_answer_was_lost_finds_the_comment_and_edits_it(
    engine, settings, forge, pull_build, provider
):
    pull_build("a" * 40)
    # The comment was created, then the process died before recording its id.
    forge.handler = lambda seen: (
        (200, [{"id": 55, "body": "lgtm"}, {"id": 101, "body": MARKER + "\nold"}])
        if seen.method == "GET"
        else answers(seen)
    )
    commenter = PullCommenter(settings, engine)
    with engine.begin() as conn:
        conn.execute(
            pull_comments.insert().values(provider=provider, repo=REPO, ref=REF[provider],
                                          posting=True, attempts=0, updated_at=commenter.clock())
        )  # fmt: skip
    assert commenter.tick() == 1
    assert writes(forge) == [EDIT[provider]]


def test_a_forge_that_is_down_is_retried_and_the_comment_still_sent_once(
    engine, settings, forge, pull_build, provider
):
    pull_build("a" * 40)
    forge.handler = lambda seen: (503, {"message": "down"})
    commenter = PullCommenter(settings, engine)
    assert commenter.tick() == 0
    with engine.connect() as conn:
        row = conn.execute(sa.select(pull_comments)).one()
    assert row.attempts == 1 and row.next_attempt_at is not None and row.build_id is None
    forge.handler = answers
    commenter.clock = lambda: row.next_attempt_at
    assert commenter.tick() == 1
    assert writes(forge)[-1] == CREATE[provider]


def test_a_build_that_failed_before_training_says_where(
    engine, settings, forge, pull_build, provider
):
    pull_build("a" * 40, status="failed", trained=False)
    assert PullCommenter(settings, engine).tick() == 1
    assert "No candidate model: the build failed" in forge.seen[0].body["body"]
