"""PostgreSQL killed (`pg_ctl -m immediate`) while signed pushes arrive, with the Pub/Sub
queue: every answer is a 202 with its rows stored or a 503 with nothing stored, never a 2xx
without a row; once the database is back the sender's retries are accepted and every
accepted push is published and built once."""

from __future__ import annotations

import time
import uuid

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from service.app import create_app
from tests.queue.conftest import Counter, Stack, all_finished, pubsub_env, run_workers
from tests.service.github_payloads import push_payload, signed
from tests.support.postgres import PostgresServer
from tests.support.pubsub import PubSubEmulator
from trainhook.db import make_engine, reading
from trainhook.models import builds, deliveries, jobs


@pytest.mark.postgres
def test_database_killed_mid_stream_never_gives_2xx_without_a_row(
    own_pg: PostgresServer, pubsub_emulator: PubSubEmulator, make_settings, monkeypatch
):
    url = own_pg.url("trainhook") + "?connect_timeout=2"
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    stack = Stack(
        "pubsub-postgres", url, make_engine(url), make_settings, pubsub_env(pubsub_emulator)
    )
    stack.setup_pubsub()
    service = stack.runtime()
    service.start_background()
    answers: dict[str, int] = {}
    bodies: dict[str, tuple[bytes, dict[str, str]]] = {}
    with TestClient(create_app(service), raise_server_exceptions=False) as client:
        for i in range(40):
            if i == 12:
                own_pg.stop("immediate")  # connections die, mid-transaction for some
            if i == 28:
                own_pg.resume()
            delivery = str(uuid.uuid4())
            bodies[delivery] = signed(push_payload(after=f"{i:040x}"), delivery=delivery)
            answers[delivery] = client.post("/webhooks/github", content=bodies[delivery][0],
                                            headers=bodies[delivery][1]).status_code  # fmt: skip
            time.sleep(0.02)
        assert set(answers.values()) <= {202, 503} and 503 in answers.values()
        with reading(stack.engine) as conn:
            stored = set(conn.execute(sa.select(deliveries.c.delivery_id)).scalars())
        assert stored == {d for d, status in answers.items() if status == 202}
        for delivery, status in answers.items():  # the sender retries what failed
            if status == 503:
                body, headers = bodies[delivery]
                response = client.post("/webhooks/github", content=body, headers=headers)
                assert response.status_code == 202

    run_workers([stack.runtime()], Counter().pipeline(), all_finished(stack.engine, 40), 60)
    with reading(stack.engine) as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(builds)).scalar() == 40
        assert (
            conn.execute(sa.select(sa.func.count()).where(jobs.c.status == "done")).scalar() == 40
        )
    stack.close()
    stack.engine.dispose()
