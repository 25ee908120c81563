"""Stale pushes are not built: a captured delivery resent with a new delivery id (GitHub signs
the body, not `X-GitHub-Delivery`; no forge signs its delivery id) cannot put an older commit
back over the deployed one. Run over every forge and over SQLite and PostgreSQL.

"Deployed" is recorded the way the worker records it: a `deploy` stage event `succeeded`."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from service.app import create_app
from service.intake import Incoming, record_deliveries
from tests.service.conftest import counts
from tests.service.forge_kits import KITS, Kit, Signed, post
from trainhook.builds import BuildSpec, Delivery, add_event, create_build
from trainhook.runtime import Runtime, build_runtime
from trainhook.stale import branch_history

A = "a1" * 20  # the older commit
B = "b2" * 20  # the newer one, deployed
C = "c3" * 20  # a genuinely new push
Serve = Callable[[Kit], tuple[TestClient, Runtime]]


@pytest.fixture(params=KITS, ids=[k.route for k in KITS])
def kit(request: pytest.FixtureRequest) -> Kit:
    return request.param


@pytest.fixture
def serve(db_url: str, engine: sa.Engine, make_settings: Callable[..., Any]) -> Iterator[Serve]:
    stack = ExitStack()

    def start(kit: Kit) -> tuple[TestClient, Runtime]:
        runtime = build_runtime(make_settings(db_url, provider=kit.provider), engine)
        client = TestClient(create_app(runtime), raise_server_exceptions=False)
        return stack.enter_context(client), runtime

    yield start
    stack.close()


def resent(kit: Kit, captured: Signed) -> Signed:
    """The captured body and signature, byte for byte, with new delivery ids: what anyone
    who saw one delivery (a proxy log, a debugging endpoint) can send again."""
    raw, headers = captured
    fresh = {name: str(uuid.uuid4()) for name in kit.delivery_headers if name in headers}
    return raw, {**headers, **fresh}


def deployed(runtime: Runtime, build_id: int) -> None:
    with runtime.engine.begin() as conn:
        add_event(conn, build_id, "deploy", "succeeded", detail="released")


def a_then_b_deployed(kit: Kit, client: TestClient, runtime: Runtime) -> tuple[Signed, Signed, int]:
    """Push A (built), push B (built and deployed): both captured deliveries, B's build."""
    first, second = kit.sign(kit.push(after=A)), kit.sign(kit.push(after=B))
    assert post(client, kit, first)[0] == 202
    status, body = post(client, kit, second)
    assert status == 202
    deployed(runtime, body["build_id"])
    return first, second, body["build_id"]


def test_a_captured_push_resent_after_a_newer_deploy_is_ignored(kit: Kit, serve: Serve):
    client, runtime = serve(kit)
    first, _, b_build = a_then_b_deployed(kit, client, runtime)
    before = counts(runtime.engine)

    answer = post(client, kit, resent(kit, first))

    reason = f"stale push: {A[:12]} is older than {B[:12]} (build #{b_build})"
    assert answer == (200, {"status": "ignored", "reason": reason})
    after = counts(runtime.engine)
    assert after["builds"] == before["builds"] == 2 and after["jobs"] == 2
    assert after["deliveries"] == 3  # kept, as every verified delivery is


def test_a_push_of_the_deployed_commit_is_ignored(kit: Kit, serve: Serve):
    client, runtime = serve(kit)
    _, second, _ = a_then_b_deployed(kit, client, runtime)

    answer = post(client, kit, resent(kit, second))

    assert answer == (
        200,
        {"status": "ignored", "reason": f"stale push: {B[:12]} is already deployed"},
    )
    assert counts(runtime.engine)["builds"] == 2


def test_a_redelivery_with_its_own_id_is_still_a_duplicate(kit: Kit, serve: Serve):
    client, runtime = serve(kit)
    _, second, b_build = a_then_b_deployed(kit, client, runtime)
    assert post(client, kit, second) == (200, {"status": "duplicate", "build_id": b_build})


def test_a_new_push_after_a_deploy_still_builds(kit: Kit, serve: Serve):
    client, runtime = serve(kit)
    a_then_b_deployed(kit, client, runtime)

    status, body = post(client, kit, kit.sign(kit.push(after=C)))

    assert (status, body["status"]) == (202, "queued")
    assert counts(runtime.engine)["builds"] == 3


def test_a_commit_first_built_after_the_deployed_one_is_not_stale(kit: Kit, serve: Serve):
    # C's build came after B's deploy (its tests failed, say): C is newer, sending it again
    # builds it again. Only what precedes the deployed build is held back.
    client, runtime = serve(kit)
    a_then_b_deployed(kit, client, runtime)
    third = kit.sign(kit.push(after=C))
    assert post(client, kit, third)[0] == 202

    assert post(client, kit, resent(kit, third))[0] == 202


def test_a_github_push_with_every_unsigned_header_new_is_ignored(serve: Serve):
    # Hook id too: GitHub signs neither X-GitHub-Delivery nor X-GitHub-Hook-ID.
    kit = KITS[0]
    client, runtime = serve(kit)
    first, _, _ = a_then_b_deployed(kit, client, runtime)
    raw, headers = resent(kit, first)
    headers = {**headers, "X-GitHub-Hook-ID": "424242"}

    status, body = post(client, kit, (raw, headers))

    assert (status, body["status"]) == (200, "ignored") and "stale push" in body["reason"]


def test_an_operator_rebuild_of_an_older_commit_still_builds(serve: Serve):
    kit = KITS[0]
    client, runtime = serve(kit)
    a_then_b_deployed(kit, client, runtime)

    response = client.post(
        "/rebuild",
        json={"repo": "octo-org/social-score-api", "sha": A},
        headers={"Authorization": "Bearer test-token-0123456789"},
    )

    assert response.status_code == 202, response.json()
    assert counts(runtime.engine)["builds"] == 3


def incoming(sha: str, delivery: str) -> Incoming:
    at = datetime.now(UTC)
    return Incoming(
        delivery=Delivery(
            "github", "1", delivery, "push", "octo-org/social-score-api", {}, b"{}", at
        ),
        spec=BuildSpec("github", "octo-org/social-score-api", "refs/heads/main", sha),
    )


def test_one_group_commit_answers_each_delivery_on_its_own(engine: sa.Engine):
    # The writer stores many deliveries in one transaction: a stale one among them is
    # ignored, its neighbours build or stay duplicates, exactly as if sent alone.
    with engine.begin() as conn:
        record_deliveries(conn, [incoming(A, "d-a")])
        (b,) = record_deliveries(conn, [incoming(B, "d-b")])
        assert b.build_id is not None
        add_event(conn, b.build_id, "deploy", "succeeded")
    with engine.begin() as conn:
        answers = record_deliveries(
            conn,
            [
                incoming(A, "d-a-again"),
                incoming(C, "d-c"),
                incoming(B, "d-b"),
                incoming(B, "d-b-again"),
                incoming(C, "d-c"),
            ],
        )
    c = answers[1].build_id
    assert c is not None and c > b.build_id
    assert [(a.build_id, a.duplicate, a.reason) for a in answers] == [
        (None, False, f"stale push: {A[:12]} is older than {B[:12]} (build #{b.build_id})"),
        (c, False, None),
        (b.build_id, True, "queued"),
        (None, False, f"stale push: {B[:12]} is already deployed"),
        (c, True, "queued"),
    ]
    with engine.connect() as conn:
        stored = conn.execute(
            sa.text("SELECT delivery_id, outcome FROM deliveries ORDER BY id")
        ).all()
    assert [tuple(row) for row in stored][2:] == [
        ("d-a-again", "ignored"),
        ("d-c", "queued"),
        ("d-b-again", "ignored"),
    ]


@pytest.mark.parametrize(
    "provider,repo,ref",
    [
        ("github", "octo-org/another-api", "refs/heads/main"),
        ("gitlab", "octo-org/social-score-api", "refs/heads/main"),
        ("github", "octo-org/social-score-api", "refs/heads/dev"),
    ],
    ids=["another-repository", "another-forge", "another-branch"],
)
def test_a_deploy_of_another_repositorys_or_branchs_commit_never_makes_a_push_stale(
    engine: sa.Engine, provider: str, repo: str, ref: str
):
    # The same commit deployed from another branch, for another repository, or for the same
    # name on another forge: nothing of this branch's history.
    with engine.begin() as conn:
        (ours,) = record_deliveries(conn, [incoming(A, "d-a")])
        other = create_build(conn, BuildSpec(provider, repo, ref, B))
        add_event(conn, other, "deploy", "succeeded")
    with engine.begin() as conn:
        answers = record_deliveries(conn, [incoming(B, "d-b")])
        history = branch_history(conn, "github", "octo-org/social-score-api", "refs/heads/main")

    assert answers[0].build_id is not None and answers[0].reason is None
    assert history.deployed is None and ours.build_id is not None


@pytest.mark.parametrize("status", ["running", "failed"])
def test_a_deploy_that_did_not_succeed_makes_no_push_stale(engine: sa.Engine, status: str):
    with engine.begin() as conn:
        record_deliveries(conn, [incoming(A, "d-a")])
        (b,) = record_deliveries(conn, [incoming(B, "d-b")])
        assert b.build_id is not None
        add_event(conn, b.build_id, "deploy", status)
    with engine.begin() as conn:
        (again,) = record_deliveries(conn, [incoming(A, "d-a-again")])

    assert again.build_id is not None and again.reason is None
