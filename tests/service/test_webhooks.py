"""POST /webhooks/github: every answer of the contract, with what it leaves in the database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from service import ingest
from service.forges import ForgeEvent, PullRequest, Push, Unauthorized
from service.forges.github import signature
from service.intake import Incoming, Recorded
from service.webhooks import FORGES
from service.writer import DeliveryWriter
from tests.conftest import SHARED, shared_path
from tests.service.conftest import counts
from tests.service.github_payloads import BEFORE, REPO, SHA, ping_payload, push_payload, signed
from trainhook.buildview import get_build
from trainhook.models import deliveries, jobs, metadata
from trainhook.repos import RepoConfig
from trainhook.runtime import Runtime
from trainhook.settings import Settings

URL = "/webhooks/github"


def post(client: TestClient, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    response = client.post(URL, content=body, headers=headers)
    return response.status_code, response.json()


def test_github_documented_signature_vector_matches() -> None:
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert signature("It's a Secret to Everybody", b"Hello, World!") == expected


def test_signed_push_is_queued_with_build_stages_and_job(client: TestClient, runtime: Runtime):
    status, body = post(client, *signed(push_payload()))
    assert status == 202
    assert body == {
        "status": "queued",
        "build_id": body["build_id"],
        "status_url": f"/builds/{body['build_id']}",
    }
    with runtime.engine.connect() as conn:
        build = get_build(conn, body["build_id"])
        job = conn.execute(sa.select(jobs)).one()
    assert build is not None
    assert (build["repo"], build["ref"], build["sha"], build["trigger"]) == (
        REPO,
        "refs/heads/main",
        SHA,
        "push",
    )
    assert build["status"] == "queued"
    assert build["commit_message"].startswith("Retrain on new data")
    assert build["author"] == "Mona Lisa"
    stages = {s["name"]: s["status"] for s in build["stages"]}
    assert stages["received"] == "succeeded"
    assert stages["queued"] == "running"
    assert stages["checkout"] == "pending"
    assert job.build_id == body["build_id"] and job.status == "queued"


def test_form_encoded_payload_is_accepted(client: TestClient):
    raw = urlencode({"payload": json.dumps(push_payload())}).encode()
    status, body = post(client, *signed(raw, content_type="application/x-www-form-urlencoded"))
    assert status == 202, body


def test_redelivered_delivery_is_not_built_twice(client: TestClient, runtime: Runtime):
    raw, headers = signed(push_payload(), delivery="d-1")
    first = post(client, raw, headers)
    second = post(client, raw, headers)
    assert first[0] == 202
    assert second == (200, {"status": "duplicate", "build_id": first[1]["build_id"]})
    assert counts(runtime.engine)["builds"] == 1
    assert counts(runtime.engine)["jobs"] == 1


def test_same_delivery_id_from_another_hook_is_a_new_delivery(client: TestClient):
    raw, headers = signed(push_payload(), delivery="d-1")
    assert post(client, raw, headers)[0] == 202
    headers["X-GitHub-Hook-ID"] = "43"
    assert post(client, raw, headers)[0] == 202


def test_ping_is_answered_and_never_built(client: TestClient, runtime: Runtime):
    status, body = post(client, *signed(ping_payload(), event="ping"))
    assert status == 200
    assert body["status"] == "ignored" and "ping" in body["reason"]
    assert counts(runtime.engine)["builds"] == 0
    assert counts(runtime.engine)["deliveries"] == 1


def test_other_events_are_ignored(client: TestClient, runtime: Runtime):
    status, body = post(client, *signed(push_payload(), event="issues"))
    assert (status, body["status"]) == (200, "ignored")
    assert "issues" in body["reason"]
    assert counts(runtime.engine)["builds"] == 0


def test_push_to_unconfigured_branch_is_ignored_with_reason(client: TestClient, runtime: Runtime):
    status, body = post(client, *signed(push_payload(ref="refs/heads/feature/x")))
    assert (status, body["status"]) == (200, "ignored")
    assert "feature/x" in body["reason"]
    assert counts(runtime.engine)["builds"] == 0


def test_branch_globs_select_branches(db_url: str, engine: sa.Engine, make_settings) -> None:
    from service.app import create_app
    from trainhook.runtime import build_runtime

    runtime = build_runtime(make_settings(db_url, branches=("main", "release/*")), engine)
    with TestClient(create_app(runtime)) as client:
        assert post(client, *signed(push_payload(ref="refs/heads/release/1.2")))[0] == 202
        assert post(client, *signed(push_payload(ref="refs/heads/releases")))[0] == 200


def test_deleted_branch_is_ignored(client: TestClient, runtime: Runtime):
    payload = push_payload(after="0" * 40, deleted=True, head_commit=None)
    status, body = post(client, *signed(payload))
    assert (status, body["status"]) == (200, "ignored")
    assert "deleted" in body["reason"]
    assert counts(runtime.engine)["builds"] == 0


def test_tag_push_is_ignored(client: TestClient):
    status, body = post(client, *signed(push_payload(ref="refs/tags/v1.0")))
    assert (status, body["status"]) == (200, "ignored")


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda h: h.pop("X-Hub-Signature-256"), id="missing"),
        pytest.param(lambda h: h.update({"X-Hub-Signature-256": "sha256=" + "0" * 64}), id="wrong"),
        pytest.param(lambda h: h.update({"X-Hub-Signature-256": "garbage"}), id="garbage"),
        pytest.param(lambda h: h.update({"X-Hub-Signature-256": ""}), id="empty"),
    ],
)
def test_bad_or_missing_signature_is_401_and_stores_nothing(client, runtime, mutate):
    raw, headers = signed(push_payload())
    mutate(headers)
    status, body = post(client, raw, headers)
    assert status == 401
    assert "signature" in body["error"].lower() or "X-Hub" in body["error"]
    assert counts(runtime.engine) == {"deliveries": 0, "builds": 0, "stage_events": 0, "jobs": 0}


def test_signature_with_another_secret_is_401(client: TestClient, runtime: Runtime):
    status, _ = post(client, *signed(push_payload(), secret="not the secret"))
    assert status == 401
    assert counts(runtime.engine)["deliveries"] == 0


def test_tampered_body_is_401(client: TestClient):
    raw, headers = signed(push_payload())
    status, _ = post(client, raw.replace(b"main", b"mains"), headers)
    assert status == 401


def test_unknown_repository_is_404(client: TestClient, runtime: Runtime):
    status, body = post(client, *signed(push_payload(repo="someone/else")))
    assert status == 404
    assert "someone/else" in body["error"]
    assert counts(runtime.engine)["deliveries"] == 0


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"[1, 2]", b"", b"\xff\xfe", b'{"repository": "x"}', b'{"zen": 1}'],
    ids=["broken", "array", "empty", "bytes", "repo-not-object", "no-repo"],
)
def test_malformed_body_is_400_and_stores_nothing(client, runtime, raw):
    status, body = post(client, *signed(raw))
    assert status == 400
    assert body["error"]
    assert counts(runtime.engine)["deliveries"] == 0


def test_wrong_content_type_is_400_naming_it(client: TestClient):
    status, body = post(client, *signed(push_payload(), content_type="text/plain"))
    assert status == 400
    assert "text/plain" in body["error"]


def test_missing_delivery_header_is_400(client: TestClient, runtime: Runtime):
    raw, headers = signed(push_payload())
    del headers["X-GitHub-Delivery"]
    status, body = post(client, raw, headers)
    assert status == 400 and "X-GitHub-Delivery" in body["error"]
    assert counts(runtime.engine)["deliveries"] == 0


def test_body_over_the_limit_is_413(db_url, engine, make_settings):
    from service.app import create_app
    from trainhook.runtime import build_runtime

    runtime = build_runtime(make_settings(db_url, env={"TRAINHOOK_BODY_LIMIT": "2048"}), engine)
    payload = push_payload(padding="x" * 4096)
    with TestClient(create_app(runtime)) as client:
        status, body = post(client, *signed(payload))
    assert status == 413 and "limit" in body["error"]
    assert counts(engine)["deliveries"] == 0


def test_chunked_body_over_the_limit_is_413_without_content_length(db_url, engine, make_settings):
    from service.app import create_app
    from trainhook.runtime import build_runtime

    runtime = build_runtime(make_settings(db_url, env={"TRAINHOOK_BODY_LIMIT": "2048"}), engine)
    raw, headers = signed(push_payload(padding="x" * 4096))

    def chunks():
        for i in range(0, len(raw), 512):
            yield raw[i : i + 512]

    with TestClient(create_app(runtime)) as client:
        response = client.post(URL, content=chunks(), headers=headers)
    assert response.status_code == 413


def test_database_unavailable_is_503_never_2xx(make_settings):
    from service.app import create_app
    from trainhook.db import make_engine
    from trainhook.runtime import build_runtime

    dead = "postgresql+psycopg://postgres@127.0.0.1:1/trainhook?connect_timeout=2"
    runtime = build_runtime(make_settings(dead), make_engine(dead))
    with TestClient(create_app(runtime)) as client:
        status, body = post(client, *signed(push_payload()))
    assert status == 503
    assert "127.0.0.1" not in body["error"]


def test_payload_clone_url_is_never_recorded(client: TestClient, runtime: Runtime):
    # The payload names https://evil.example/attacker.git as the clone URL: the build is of
    # the configured repository, and only the raw body (kept for audit) holds the payload's.
    status, body = post(client, *signed(push_payload()))
    assert status == 202
    found = []
    with runtime.engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(sa.select(table)).mappings():
                for column, value in row.items():
                    text = bytes(value).decode() if isinstance(value, bytes | memoryview) else value
                    if "evil.example" in str(text):
                        found.append(f"{table.name}.{column}")
    assert found == ["deliveries.body"]
    with runtime.engine.connect() as conn:
        build = get_build(conn, body["build_id"])
    assert build is not None and build["repo"] == REPO
    configured = runtime.settings.repo(REPO, "github")
    assert configured is not None
    assert configured.clone_url == "https://github.com/octo-org/social-score-api.git"


def _remove(payload: dict, path: tuple[str, ...]) -> dict:
    copy = json.loads(json.dumps(payload))
    node = copy
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return copy


def _paths(node: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            found.append((*prefix, key))
            if key in ("repository", "head_commit", "pusher"):
                found.extend(_paths(value, (*prefix, key)))
    return found


def _fixture_payloads() -> list[Any]:
    """Our own payloads and every published one under ../shared; without that folder its
    cases are one reported skip (a failure under TRAINHOOK_REQUIRE_SHARED), never dropped."""
    items: list[Any] = [("own-push", push_payload()), ("own-ping", ping_payload())]
    folder = SHARED / "fixtures" / "webhooks" / "github"
    if not folder.exists():
        return [*items, pytest.param("shared", None, id="shared-fixtures-absent")]
    for path in sorted(folder.glob("*.json")):
        items.append((path.name, json.loads(path.read_text())))
    return items


@pytest.mark.parametrize(
    "name,payload", _fixture_payloads(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_field_removed_in_turn_never_500_nor_half_written(
    db_url, engine, make_settings, name: str, payload: dict | None
):
    from service.app import create_app
    from trainhook.runtime import build_runtime

    if payload is None:
        shared_path("fixtures", "webhooks", "github")  # skips (or fails under CI)
        return

    repo_name = payload.get("repository", {}).get("full_name", "octo-org/social-score-api")
    runtime = build_runtime(make_settings(db_url, name=repo_name, branches=("*",)), engine)
    event = "ping" if "zen" in payload else "push"
    with TestClient(create_app(runtime), raise_server_exceptions=False) as client:
        for path in _paths(payload):
            before = counts(engine)
            status, body = post(client, *signed(_remove(payload, path), event=event))
            after = counts(engine)
            assert status in (200, 202, 400, 404), (path, status, body)
            if status >= 400:
                assert after == before, (path, "a refused delivery wrote rows")
            else:
                new_builds = after["builds"] - before["builds"]
                assert after["deliveries"] == before["deliveries"] + 1
                assert after["jobs"] - before["jobs"] == new_builds
                assert new_builds == (1 if status == 202 else 0)


def test_shared_github_fixtures_give_the_documented_answers(db_url, engine, make_settings):
    folder = shared_path("fixtures", "webhooks", "github")
    from service.app import create_app
    from trainhook.runtime import build_runtime

    expected = {
        "push.payload.json": (200, "ignored"),  # a tag deletion
        "push.with-organization.payload.json": (200, "ignored"),
        "push.with-new-branch.payload.json": (202, "queued"),  # branch creation on master
        "ping.payload.json": (200, "ignored"),
        # An organization hook names no repository, so no secret can be chosen: refused.
        "ping.with-organization.payload.json": (400, None),
    }
    for filename, (want_status, want) in expected.items():
        payload = json.loads((folder / filename).read_text())
        name = payload.get("repository", {}).get("full_name", "Octocoders/Hello-World")
        runtime = build_runtime(make_settings(db_url, name=name, branches=("master",)), engine)
        event = "ping" if filename.startswith("ping") else "push"
        with TestClient(create_app(runtime)) as client:
            raw = (folder / filename).read_bytes()
            status, body = post(client, *signed(raw, event=event))
        assert (status, body.get("status")) == (want_status, want), (filename, body)
        if status == 400:
            assert "repository" in body["error"]


def test_gitea_style_extra_headers_do_not_change_the_verifier(client: TestClient):
    raw, headers = signed(push_payload())
    headers["X-Gitea-Signature"] = "0" * 64
    assert post(client, raw, headers)[0] == 202
    headers["X-Hub-Signature-256"] = "sha256=" + "0" * 64
    headers["X-GitHub-Delivery"] = "other"
    assert post(client, raw, headers)[0] == 401


def test_secret_never_appears_in_answers(client: TestClient):
    raw, headers = signed(push_payload(), secret="wrong")
    _, body = post(client, raw, headers)
    assert "Secret to Everybody" not in json.dumps(body)


def test_stored_body_is_the_raw_bytes(client: TestClient, runtime: Runtime, tmp_path: Path):
    raw, headers = signed(push_payload())
    post(client, raw, headers)
    with runtime.engine.connect() as conn:
        assert conn.execute(sa.select(deliveries.c.body)).scalar_one() == raw


# ---- service/ingest.py one decision at a time (no HTTP, no database) ---------------------


def a_repo(make_settings: Callable[..., Settings], extra: str = "") -> RepoConfig:
    return make_settings(extra=extra).repos[0]


def test_a_ping_is_ignored_as_set_up_and_another_event_by_its_name(
    make_settings: Callable[..., Settings],
):
    repo = a_repo(make_settings)

    assert ingest.ignore_reason(repo, ForgeEvent("ping", "d", "h")) == "ping: webhook is set up"
    assert ingest.ignore_reason(repo, ForgeEvent("issues", "d", "h")) == (
        "event 'issues' is not built (only pushes and pull requests)"
    )


def test_a_repository_without_a_secret_is_refused_naming_its_variable(
    make_settings: Callable[..., Settings],
):
    settings = make_settings()
    runtime = SimpleNamespace(
        settings=SimpleNamespace(
            repo=lambda name, forge: settings.repos[0], secret_for=lambda r: None
        )
    )
    body, headers = signed(push_payload())

    with pytest.raises(Unauthorized) as refused:
        ingest.verify(cast(Runtime, runtime), FORGES["github"], lower(headers), body)

    assert refused.value.message == f"no webhook secret is set for {REPO!r} (TEST_WEBHOOK_SECRET)"


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def verified(settings: Settings, body: bytes, headers: dict[str, str]) -> ForgeEvent:
    runtime = SimpleNamespace(settings=settings)
    return ingest.verify(cast(Runtime, runtime), FORGES["github"], lower(headers), body)[1]


def test_files_are_read_from_a_push_only_for_a_repository_with_path_filters(
    make_settings: Callable[..., Settings],
):
    filtered = make_settings(extra='paths = ["data/**"]')
    plain = make_settings()
    push = signed(
        push_payload(commits=[{"id": SHA, "added": ["data/a.csv"], "removed": [], "modified": []}])
    )

    with_files = verified(filtered, *push).push
    assert with_files is not None and with_files.files == frozenset({"data/a.csv"})
    without = verified(plain, *push).push
    assert without is not None and without.files is None
    ping = verified(filtered, *signed(ping_payload(), event="ping"))
    assert ping.push is None and ping.event == "ping"


def pull_event(action: str = "build", **fields: Any) -> ForgeEvent:
    pull = PullRequest(
        repo=REPO,
        number=7,
        action=action,
        verb={"build": "opened", "close": "closed"}.get(action, "edited"),
        ref="refs/pull/7/head",
        sha=SHA,
        head_repo=REPO,
        same_repo=True,
        base_branch="main",
        title="Add more rows",
        author="octocat",
        before=BEFORE,
        **fields,
    )
    return ForgeEvent("pull_request", "d-1", "h-1", pull=pull)


def incoming(repo: RepoConfig, event: ForgeEvent) -> Incoming:
    return ingest.incoming(FORGES["github"], repo, event, {}, b"{}", datetime.now(UTC))


def test_a_request_builds_its_head_with_its_title_author_and_previous_head(
    make_settings: Callable[..., Settings],
):
    item = incoming(a_repo(make_settings), pull_event())

    assert item.reason is None and item.supersedes == "refs/pull/7/head"
    assert item.spec is not None
    assert (item.spec.ref, item.spec.sha, item.spec.before_sha, item.spec.trigger) == (
        "refs/pull/7/head",
        SHA,
        BEFORE,
        "pull_request",
    )
    assert (item.spec.commit_message, item.spec.author) == ("Add more rows", "octocat")


def test_an_edited_request_leaves_its_builds_alone_and_with_pull_requests_off_so_does_a_close(
    make_settings: Callable[..., Settings],
):
    repo = a_repo(make_settings)
    off = a_repo(make_settings, 'pull_requests = "off"')

    edited = incoming(repo, pull_event("other"))
    closed = incoming(repo, pull_event("close"))
    closed_off = incoming(off, pull_event("close"))

    assert edited.spec is None and edited.supersedes is None and edited.reason
    assert closed.spec is None and closed.supersedes == "refs/pull/7/head"
    assert closed_off.spec is None and closed_off.supersedes is None


def test_a_push_builds_with_its_previous_head(make_settings: Callable[..., Settings]):
    push = Push(
        repo=REPO,
        ref="refs/heads/main",
        before=BEFORE,
        after=SHA,
        deleted=False,
        commit_message="Retrain",
        author="Mona",
    )

    item = incoming(a_repo(make_settings), ForgeEvent("push", "d-1", "h-1", push=push))

    assert item.spec is not None
    assert (item.spec.ref, item.spec.sha, item.spec.before_sha) == ("refs/heads/main", SHA, BEFORE)
    assert (item.spec.commit_message, item.spec.author) == ("Retrain", "Mona")


def test_a_queued_build_is_announced_to_the_queue_by_its_id():
    notified: list[list[int]] = []
    runtime = SimpleNamespace(queue=SimpleNamespace(notify=notified.append))

    class Writer:
        def __init__(self, recorded: Recorded) -> None:
            self.recorded = recorded

        async def record(self, item: Incoming) -> Recorded:
            return self.recorded

    def answer(recorded: Recorded) -> ingest.Answer:
        writer = cast(DeliveryWriter, Writer(recorded))
        return asyncio.run(ingest.record(cast(Runtime, runtime), writer, cast(Incoming, None)))

    assert answer(Recorded(41, False, None)) == ingest.Answer(
        202, {"status": "queued", "build_id": 41, "status_url": "/builds/41"}
    )
    assert notified == [[41]]
    assert answer(Recorded(41, True, None)).body == {"status": "duplicate", "build_id": 41}
    assert answer(Recorded(None, False, "why")).body == {"status": "ignored", "reason": "why"}
    assert notified == [[41]]  # a duplicate or an ignored delivery announces nothing
