"""Live updates: one poller per process (one query per tick, whatever the number of tabs),
fan-out through bounded queues, and GET /events as a resumable Server-Sent Events stream."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from service import events as events_module
from service.feed import Interest, Position
from service.hub import Hub, Message
from tests.browser.server import live_server
from tests.service.test_api import broken_engine, count_selects, make_build
from trainhook.builds import add_event, append_log, mark_finished
from trainhook.models import stage_events, utcnow
from trainhook.runtime import Runtime, build_runtime


def drain(queue: asyncio.Queue[Message | None]) -> list[Message | None]:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


def kinds(messages: list[Message | None]) -> list[str]:
    return [m.event if m else "end" for m in messages]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_one_query_per_tick_whatever_the_number_of_open_pages(engine: sa.Engine):
    build_id = make_build(engine, status="running")

    async def scenario() -> tuple[list[str], list[list[Message | None]]]:
        hub = Hub(engine)
        subs = [(await hub.subscribe(Interest(build=build_id)))[0] for _ in range(50)]
        subs += [(await hub.subscribe(Interest(ids=frozenset({build_id}))))[0] for _ in range(50)]
        with engine.begin() as conn:
            add_event(conn, build_id, "checkout", "running")
            append_log(conn, build_id, "checkout", "cloning\n")
        with count_selects(engine) as selects:
            for _ in range(3):
                await hub.tick()
        return selects, [drain(s.queue) for s in subs]

    selects, received = run(scenario())
    assert len(selects) == 3  # three ticks, three queries, for a hundred subscribers
    assert all(kinds(r) == ["stage", "log", "build"] for r in received[:50])
    assert all(kinds(r) == ["stage", "build"] for r in received[50:])  # lists get no logs


def test_each_subscriber_gets_only_what_it_follows(engine: sa.Engine):
    shown = make_build(engine, status="running")
    other = make_build(engine, repo="other/repo", status="running")

    async def scenario() -> dict[str, list[Message | None]]:
        hub = Hub(engine)
        subs = {
            "shown": Interest(build=shown),
            "other": Interest(build=other),
            "list": Interest(ids=frozenset({shown}), top=other, repo="octo-org/social-score-api"),
            "all": Interest(ids=frozenset({shown}), top=other),
            "empty": Interest(top=0, repo="other/repo"),  # a first page with no rows yet
            "older": Interest(ids=frozenset({shown})),  # an older page: no news
        }
        queues = {k: (await hub.subscribe(v))[0] for k, v in subs.items()}
        await hub.tick()  # first sight of the builds' status
        for q in queues.values():
            drain(q.queue)
        newer = make_build(engine, repo="other/repo")
        with engine.begin() as conn:
            add_event(conn, shown, "train", "succeeded", cache="hit", detail="deps hit nltk miss")
        await hub.tick()
        return {k: drain(q.queue) for k, q in queues.items()} | {"newer": [newer]}  # type: ignore[dict-item]

    got = run(scenario())
    assert kinds(got["other"]) == []
    assert kinds(got["list"]) == ["stage"]  # the new build is in another repo: not news here
    all_builds = [m.data["build"] for m in got["all"] if m]
    assert got["newer"][0] in all_builds and shown in all_builds
    assert {m.data["build"] for m in got["empty"] if m} == {got["newer"][0]}
    assert {m.data["build"] for m in got["older"] if m} == {shown}
    stage = got["shown"][-1]
    assert stage and stage.data["levels"] == {"deps": "hit", "nltk": "miss", "model": "hit"}


def test_a_subscriber_a_queue_behind_is_told_to_reload(engine: sa.Engine):
    build_id = make_build(engine, status="running")

    async def scenario() -> list[Message | None]:
        hub = Hub(engine, queue_size=3)
        sub, _ = await hub.subscribe(Interest(build=build_id))
        with engine.begin() as conn:
            for _ in range(6):
                append_log(conn, build_id, "train", "line\n")
        await hub.tick()
        await hub.tick()
        return drain(sub.queue)

    assert kinds(run(scenario())) == ["reload"]


def test_an_id_gap_holds_later_rows_until_filled_or_expired(engine: sa.Engine):
    build_id = make_build(engine, status="running")

    def insert(event_id: int, stage: str) -> None:
        with engine.begin() as conn:
            conn.execute(
                stage_events.insert().values(
                    id=event_id, build_id=build_id, stage=stage, status="running", at=utcnow()
                )
            )

    async def scenario() -> list[list[str]]:
        hub = Hub(engine, gap_wait=0.3)
        sub, start = await hub.subscribe(Interest(build=build_id))
        await hub.tick()
        drain(sub.queue)
        seen = []
        insert(start.event + 2, "test")  # committed first, though its id is later
        await hub.tick()
        seen.append([m.data["stage"] for m in drain(sub.queue) if m])
        insert(start.event + 1, "checkout")  # the gap fills: both, in id order
        await hub.tick()
        seen.append([m.data["stage"] for m in drain(sub.queue) if m])
        insert(start.event + 4, "train")  # a gap that never fills (a rolled back insert)
        await hub.tick()
        seen.append([m.data["stage"] for m in drain(sub.queue) if m])
        await asyncio.sleep(0.35)
        await hub.tick()
        seen.append([m.data["stage"] for m in drain(sub.queue) if m])
        return seen

    assert run(scenario()) == [[], ["checkout", "test"], [], ["train"]]


def test_hub_stops_polling_when_no_page_is_open_and_resumes(engine: sa.Engine):
    async def scenario() -> tuple[int, int, Position | None, Position]:
        hub = Hub(engine, interval=0.01, idle_after=0.05)
        await hub.start()
        sub, _ = await hub.subscribe(Interest(build=1))
        await asyncio.sleep(0.1)
        hub.unsubscribe(sub)
        # A poll on a busy database can outlast idle_after: wait for idleness, not a fixed time.
        deadline = time.monotonic() + 10
        while hub.position is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        idle_polls, idle_position = hub.polls, hub.position
        await asyncio.sleep(0.2)
        still = hub.polls
        make_build(engine)
        _, resumed = await hub.subscribe(Interest(build=1))
        await hub.close()
        return idle_polls, still, idle_position, resumed

    idle_polls, still, idle_position, resumed = run(scenario())
    assert idle_polls > 0 and still == idle_polls and idle_position is None
    assert resumed.event >= 3  # picked up at the head, with the new build's events


def test_app_shutdown_stops_the_poller(runtime: Runtime):
    from service.app import create_app

    app = create_app(runtime)
    with TestClient(app):
        hub = app.state.hub
        assert hub._task is not None and not hub._task.done()
    assert hub._task is None and hub.closing


# ---- GET /events over a real server ------------------------------------------------------


def frames(response: httpx.Response) -> Iterator[dict[str, str]]:
    """Server-sent events as dicts of their fields (`comment` for `:` lines)."""
    frame: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if frame:
                yield frame
            frame = {}
            continue
        key, _, value = line.partition(":")
        frame[key or "comment"] = value.lstrip(" ")


def collect(response: httpx.Response, until: Callable[[dict[str, str]], bool]) -> list[dict]:
    seen = []
    for frame in frames(response):
        seen.append(frame)
        if until(frame):
            return seen
    raise AssertionError(f"stream ended before the expected event: {seen}")


def later(seconds: float, fn: Callable[[], None]) -> None:
    threading.Timer(seconds, fn).start()


def test_stream_pushes_stage_changes_logs_and_status_with_ids(runtime: Runtime, engine):
    build_id = make_build(engine, status="running", stages={"checkout": ("running", None, None)})

    def worker() -> None:
        with engine.begin() as conn:
            add_event(conn, build_id, "checkout", "succeeded", detail="abc: mirror fetched")
            append_log(conn, build_id, "checkout", "done\n")
            mark_finished(conn, build_id, "succeeded")

    with live_server(runtime) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        page = http.get(f"/builds/{build_id}").text
        since = page.split('data-since="', 1)[1].split('"', 1)[0]
        with http.stream("GET", f"/events?build={build_id}&since={since}") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-store"
            later(0.3, worker)
            seen = collect(
                response, lambda f: '"succeeded"' in f.get("data", "") and f.get("event") == "build"
            )
    assert seen[0] == {"retry": "2000"}
    data = [(f["event"], json.loads(f["data"])) for f in seen if "event" in f]
    stage = next(d for e, d in data if e == "stage")
    assert (stage["stage"], stage["status"], stage["detail"]) == (
        "checkout",
        "succeeded",
        "abc: mirror fetched",
    )
    assert next(d for e, d in data if e == "log")["text"] == "done\n"
    ids = [Position.parse(f["id"]) for f in seen if "id" in f]
    assert ids == sorted(ids, key=lambda p: (p.event, p.log))  # type: ignore[union-attr]


def test_reconnect_with_last_event_id_replays_what_was_missed(runtime: Runtime, engine):
    build_id = make_build(engine, status="running", logs={"checkout": "one\n"})
    with engine.connect() as conn:
        since = conn.execute(sa.text("SELECT max(id) FROM stage_events")).scalar_one()
    with engine.begin() as conn:  # happens while the page is disconnected
        add_event(conn, build_id, "checkout", "running")
        add_event(conn, build_id, "checkout", "succeeded")
        append_log(conn, build_id, "checkout", "two\n")
    with live_server(runtime) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        headers = {"Last-Event-ID": f"{since}.1"}  # the browser's header wins over ?since=
        with http.stream("GET", f"/events?build={build_id}&since=0.0", headers=headers) as response:
            seen = collect(response, lambda f: f.get("event") == "build")
    replayed = [(f["event"], json.loads(f["data"])) for f in seen if "event" in f]
    assert [(e, d.get("stage"), d.get("status")) for e, d in replayed] == [
        ("stage", "checkout", "running"),
        ("stage", "checkout", "succeeded"),
        ("log", "checkout", None),
        ("build", None, "running"),
    ]
    assert replayed[2][1]["text"] == "two\n"  # not the chunk the page already had


def test_idle_stream_sends_heartbeats_that_move_its_position(runtime, engine, monkeypatch):
    monkeypatch.setattr(events_module, "HEARTBEAT", 0.2)
    build_id = make_build(engine, status="running")
    with (
        live_server(runtime) as server,
        httpx.Client(base_url=server.url, timeout=10) as http,
        http.stream("GET", f"/events?build={build_id}&since=0.0") as response,
    ):
        seen = collect(response, lambda f: f.get("comment") == "ping")
    assert "id" in seen[-1]  # a reconnect resumes from here, not from the page's old position


def test_list_stream_announces_new_builds_matching_its_filters(runtime: Runtime, engine):
    shown = make_build(engine, status="succeeded")
    with engine.connect() as conn:
        since = conn.execute(sa.text("SELECT max(id) FROM stage_events")).scalar_one()
    with live_server(runtime) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        url = f"/events?builds={shown}&since={since}&top={shown}&repo=octo-org/social-score-api"
        with http.stream("GET", url) as response:
            later(0.3, lambda: make_build(engine, repo="other/repo"))
            later(0.4, lambda: make_build(engine))
            seen = collect(response, lambda f: f.get("event") == "stage")
    news = json.loads(seen[-1]["data"])
    assert news["repo"] == "octo-org/social-score-api" and news["build"] > shown + 1


def test_server_stop_ends_open_streams_at_once(runtime: Runtime, engine: sa.Engine):
    build_id = make_build(engine, status="running")
    with live_server(runtime) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        with http.stream("GET", f"/events?build={build_id}&since=0.0") as response:
            stream = frames(response)
            next(stream)
            started = time.monotonic()
            server.stop()
            list(stream)  # the stream ends instead of hanging the shutdown
        assert time.monotonic() - started < 3 and not server.thread.is_alive()


@pytest.mark.parametrize("query", ["build=abc", "builds=1,x", "top=-1&builds=1"])
def test_stream_parameters_are_validated(client: TestClient, query: str):
    assert client.get(f"/events?{query}").status_code == 400


def test_stream_without_database_still_answers_a_stream_that_retries(
    db_url, tmp_path, make_settings
):
    from service.app import create_app

    runtime = build_runtime(make_settings(db_url), broken_engine(db_url, tmp_path))
    with TestClient(create_app(runtime)) as down:
        response = down.get("/events?build=1&since=0.0")
    assert response.status_code == 200
    assert response.text == "retry: 2000\n\n: database unavailable\n\n"


def test_sigterm_ends_open_streams_then_runs_the_servers_handler(engine: sa.Engine):
    import signal

    from service.dashboard import end_streams_on_signals

    seen: list[int] = []
    before = signal.signal(signal.SIGTERM, lambda sig, frame: seen.append(sig))

    async def scenario() -> list[Message | None]:
        hub = Hub(engine)
        await hub.start()
        sub, _ = await hub.subscribe(Interest(build=1))
        restore = end_streams_on_signals(hub)
        try:
            signal.raise_signal(signal.SIGTERM)
            await asyncio.sleep(0.05)
        finally:
            restore()
            await hub.close()
        return drain(sub.queue)

    try:
        assert run(scenario()) == [None]  # the stream ends at once...
        assert seen == [signal.SIGTERM]  # ...and the server still gets its signal
    finally:
        signal.signal(signal.SIGTERM, before)
