"""Delivery intake (`record_deliveries`): what one group-commit batch stores for each delivery,
and that a delivery is built once however often, and in however many batches, it arrives."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import sqlalchemy as sa

from service.intake import Incoming, record_deliveries
from tests.service.conftest import counts
from trainhook.builds import BuildSpec, Delivery

REPO = "octo-org/social-score-api"
SHA = "c3" * 20


def incoming(
    delivery_id: str,
    *,
    hook: str = "1",
    provider: str = "github",
    sha: str = SHA,
    builds: bool = True,
    reason: str | None = None,
    ref: str = "refs/heads/main",
    repo: str = REPO,
    supersedes: str | None = None,
) -> Incoming:
    delivery = Delivery(
        provider,
        hook,
        delivery_id,
        "pull_request" if supersedes else "push",
        repo,
        {"X-GitHub-Delivery": delivery_id, "Content-Type": "application/json"},
        b'{"ref": "refs/heads/main"}',
        datetime.now(UTC),
    )
    trigger = "pull_request" if supersedes else "push"
    spec = BuildSpec(provider, repo, ref, sha, trigger=trigger) if builds else None
    return Incoming(delivery, spec, reason, supersedes)


def status(engine: sa.Engine, build_id: int | None) -> tuple[str, str | None]:
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT status, error FROM builds WHERE id = :id"), {"id": build_id}
        ).one()
    return (row.status, row.error)


def stored(engine: sa.Engine) -> list[tuple]:
    with engine.connect() as conn:
        return [
            tuple(row)
            for row in conn.execute(
                sa.text(
                    "SELECT provider, hook_id, delivery_id, outcome, reason FROM deliveries"
                    " ORDER BY id"
                )
            )
        ]


def test_a_redelivery_in_the_same_batch_builds_once_and_is_answered_duplicate(engine):
    with engine.begin() as conn:
        first, again = record_deliveries(conn, [incoming("d-1"), incoming("d-1")])

    assert (first.duplicate, again.duplicate) == (False, True)
    assert first.build_id is not None and again.build_id == first.build_id
    assert counts(engine) == {"deliveries": 1, "builds": 1, "stage_events": 3, "jobs": 1}


def test_a_redelivery_in_a_later_batch_builds_nothing_and_names_the_first_build(engine):
    with engine.begin() as conn:
        (first,) = record_deliveries(conn, [incoming("d-1")])
    with engine.begin() as conn:
        (again,) = record_deliveries(conn, [incoming("d-1")])

    assert (again.build_id, again.duplicate, again.reason) == (first.build_id, True, "queued")
    assert counts(engine) == {"deliveries": 1, "builds": 1, "stage_events": 3, "jobs": 1}


def test_the_same_delivery_id_from_another_hook_or_forge_is_a_new_delivery(engine):
    with engine.begin() as conn:
        answers = record_deliveries(
            conn,
            [
                incoming("d-1"),
                incoming("d-1", hook="2"),
                incoming("d-1", provider="gitea"),
            ],
        )

    assert [a.duplicate for a in answers] == [False, False, False]
    assert len({a.build_id for a in answers}) == 3
    assert counts(engine)["jobs"] == 3


def test_each_answer_is_in_the_order_of_the_batch_with_its_own_build(engine):
    shas = [f"{i:040x}" for i in range(1, 5)]
    with engine.begin() as conn:
        answers = record_deliveries(conn, [incoming(f"d-{s}", sha=s) for s in shas])

    with engine.connect() as conn:
        built = dict(conn.execute(sa.text("SELECT id, sha FROM builds")).all())
    assert [built[a.build_id] for a in answers] == shas
    assert all(not a.duplicate and a.reason is None for a in answers)


def test_a_delivery_that_builds_nothing_is_stored_ignored_with_its_reason(engine):
    with engine.begin() as conn:
        (ignored,) = record_deliveries(
            conn, [incoming("d-tag", builds=False, reason="branch not configured")]
        )
    with engine.begin() as conn:
        (again,) = record_deliveries(
            conn, [incoming("d-tag", builds=False, reason="branch not configured")]
        )

    assert (ignored.build_id, ignored.duplicate, ignored.reason) == (
        None,
        False,
        "branch not configured",
    )
    assert (again.build_id, again.duplicate, again.reason) == (
        None,
        True,
        "branch not configured",
    )
    assert stored(engine) == [("github", "1", "d-tag", "ignored", "branch not configured")]
    assert counts(engine) == {"deliveries": 1, "builds": 0, "stage_events": 0, "jobs": 0}


def test_a_new_delivery_stores_its_body_headers_and_a_queued_build(engine):
    item = incoming("d-1")
    with engine.begin() as conn:
        (answer,) = record_deliveries(conn, [item])
        delivery = conn.execute(
            sa.text("SELECT id, body, headers, event, repo, outcome FROM deliveries")
        ).one()
        build = conn.execute(
            sa.text("SELECT delivery_id, sha, ref, status FROM builds WHERE id = :id"),
            {"id": answer.build_id},
        ).one()
        events = conn.execute(
            sa.text("SELECT stage, status FROM stage_events WHERE build_id = :id ORDER BY id"),
            {"id": answer.build_id},
        ).all()
        job = conn.execute(
            sa.text("SELECT status, attempts FROM jobs WHERE build_id = :id"),
            {"id": answer.build_id},
        ).one()

    assert bytes(delivery.body) == item.delivery.body
    # Stored as canonical JSON (sorted keys), whatever order the request listed them in.
    assert delivery.headers == '{"Content-Type": "application/json", "X-GitHub-Delivery": "d-1"}'
    assert json.loads(delivery.headers)["X-GitHub-Delivery"] == "d-1"
    assert (delivery.event, delivery.repo, delivery.outcome) == ("push", REPO, "queued")
    assert (build.delivery_id, build.sha, build.ref) == (delivery.id, SHA, "refs/heads/main")
    assert [tuple(e) for e in events] == [
        ("received", "running"),
        ("received", "succeeded"),
        ("queued", "running"),
    ]
    assert tuple(job) == ("queued", 0)


def test_an_empty_batch_stores_nothing(engine):
    with engine.begin() as conn:
        assert record_deliveries(conn, []) == []
    assert counts(engine) == {"deliveries": 0, "builds": 0, "stage_events": 0, "jobs": 0}


def test_an_ignored_delivery_first_in_a_batch_does_not_drop_the_rest(engine):
    with engine.begin() as conn:
        answers = record_deliveries(
            conn,
            [
                incoming("d-tag", builds=False, reason="branch not configured"),
                incoming("d-1"),
                incoming("d-2", sha="d4" * 20),
            ],
        )

    assert [(a.build_id is None, a.duplicate) for a in answers] == [
        (True, False),
        (False, False),
        (False, False),
    ]
    assert counts(engine) == {"deliveries": 3, "builds": 2, "stage_events": 6, "jobs": 2}


PULL = "refs/pull/7/head"


def request_builds(engine: sa.Engine) -> dict[str, int | None]:
    """A queued build of request 7, of another request, and of request 7's ref in another
    repository and on another forge."""
    with engine.begin() as conn:
        answers = record_deliveries(
            conn,
            [
                incoming("p-old", ref=PULL, sha="a1" * 20),
                incoming("p-other", ref="refs/pull/8/head", sha="a2" * 20),
                incoming("p-repo", ref=PULL, sha="a3" * 20, repo="octo-org/another-api"),
                incoming("p-forge", ref=PULL, sha="a4" * 20, provider="gitea"),
            ],
        )
    return dict(zip(("old", "other", "repo", "forge"), (a.build_id for a in answers), strict=True))


def test_a_new_head_of_a_pull_request_supersedes_only_that_requests_older_builds(engine):
    built = request_builds(engine)
    with engine.begin() as conn:
        (head,) = record_deliveries(
            conn, [incoming("p-new", ref=PULL, sha="b1" * 20, supersedes=PULL)]
        )

    assert status(engine, built["old"]) == (
        "superseded",
        f"superseded by build #{head.build_id}, a newer head of the pull request",
    )
    assert status(engine, head.build_id) == ("queued", None)
    for left in ("other", "repo", "forge"):
        assert status(engine, built[left]) == ("queued", None)


def test_closing_a_pull_request_supersedes_all_its_builds_and_builds_nothing(engine):
    built = request_builds(engine)
    with engine.begin() as conn:
        (closed,) = record_deliveries(
            conn, [incoming("p-close", ref=PULL, builds=False, supersedes=PULL)]
        )

    assert closed.build_id is None and not closed.duplicate
    assert status(engine, built["old"]) == ("superseded", "the pull request was closed")
    for left in ("other", "repo", "forge"):
        assert status(engine, built[left]) == ("queued", None)


def test_a_second_head_in_the_same_batch_supersedes_the_first(engine):
    with engine.begin() as conn:
        first, second = record_deliveries(
            conn,
            [
                incoming("p-1", ref=PULL, sha="b1" * 20, supersedes=PULL),
                incoming("p-2", ref=PULL, sha="b2" * 20, supersedes=PULL),
            ],
        )

    assert status(engine, first.build_id)[0] == "superseded"
    assert status(engine, second.build_id) == ("queued", None)


def test_a_push_earlier_in_the_batch_does_not_stop_a_new_head_from_superseding(engine):
    built = request_builds(engine)
    with engine.begin() as conn:
        _, head = record_deliveries(
            conn,
            [
                incoming("d-push", sha="c1" * 20),
                incoming("p-new", ref=PULL, sha="b1" * 20, supersedes=PULL),
            ],
        )

    assert status(engine, built["old"]) == (
        "superseded",
        f"superseded by build #{head.build_id}, a newer head of the pull request",
    )
