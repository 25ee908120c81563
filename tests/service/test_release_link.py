"""The build page of a container build: its repository's stable URL, linked, and whether the
build's release serves now (read from the release records, never from a stage detail)."""

from __future__ import annotations

import sqlalchemy as sa
from starlette.testclient import TestClient

from service.details import stage_facts
from tests.service.test_api import make_build
from tests.service.test_pages import Tags
from trainhook.releases import Releases
from trainhook.runtime import Runtime


def test_the_build_page_links_the_stable_url_and_says_whether_its_release_serves(
    client: TestClient, engine: sa.Engine, runtime: Runtime
):
    older, newer, bundle = (make_build(engine, status="succeeded") for _ in range(3))
    releases = Releases(runtime.settings.home, runtime.settings.repos[0].slug)
    for build_id in (older, newer):
        releases.save(f"b{build_id}-0123", {"version": f"b{build_id}-0123", "build_id": build_id})
    releases.switch({"version": f"b{newer}-0123", "build_id": newer, "port": 1})
    url = releases.url()

    page = Tags(client.get(f"/builds/{newer}").text)
    (link,) = page.find("a", id="release-url")
    assert link["href"] == url
    assert "this build's release serves now" in client.get(f"/builds/{newer}").text

    text = client.get(f"/builds/{older}").text
    assert f"not serving now (b{newer}-0123 serves)" in text
    # A build no container builder pushed here (the bundle builder, another machine): no URL.
    assert not Tags(client.get(f"/builds/{bundle}").text).find("a", id="release-url")


def test_the_deploy_stage_of_a_container_build_shows_digest_container_and_checks():
    detail = (
        "127.0.0.1:5000/app@sha256:" + "ab" * 32 + " serving at http://127.0.0.1:20001 in "
        "container 0123456789ab (was b1-aaaa); health /healthz and smoke test /predict passed"
    )
    facts = {f.label: f for f in stage_facts({"name": "deploy", "detail": detail})}
    assert facts["digest"].value == "sha256:" + "ab" * 32
    assert facts["container"].value == "0123456789ab"
    assert facts["previous release"].value == "b1-aaaa"
    assert facts["checks"].tone == "good" and facts["checks"].href is None
    # URLs in a detail stay text: the stable URL's link comes from the release records.
    assert all(f.href is None for f in facts.values())
