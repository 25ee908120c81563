"""Badges in a real browser: each parses as an SVG document (no parser error), lays its
text out inside its own width, and loads as an <img> the way a README embeds it."""

from __future__ import annotations

import json

from tests.browser.cdp import Page
from tests.browser.server import LiveServer
from tests.service.test_badges import finished

URLS = (
    "/badge/octo-org/social-score-api.svg",
    "/badge/octo-org/social-score-api.svg?branch=main",
    "/badge/octo-org/social-score-api.svg?metric=macro_f1",
)


def test_badges_are_valid_svg_that_render_and_load_as_images(page: Page, site: LiveServer, engine):
    finished(engine, "succeeded", f1="0.912")
    for url in URLS:
        page.goto(site.url + url)
        root = page.eval(
            "({ns: document.documentElement.namespaceURI,"
            " name: document.documentElement.localName,"
            " errors: document.getElementsByTagName('parsererror').length,"
            " width: document.documentElement.width.baseVal.value,"
            " texts: [...document.querySelectorAll('text')].map(t => ["
            "   t.textContent, t.getBBox().x, t.getBBox().x + t.getBBox().width])})"
        )
        assert root["ns"] == "http://www.w3.org/2000/svg" and root["name"] == "svg", url
        assert root["errors"] == 0, url
        for text, left, right in root["texts"]:
            assert text and 0 <= left < right <= root["width"], (url, text, root)
        # Embedded as a README does: an <img> that decodes.
        size = page.eval(
            f"(async () => {{ const img = new Image(); img.src = {json.dumps(url)};"
            " await img.decode(); return [img.naturalWidth, img.naturalHeight]; })()"
        )
        assert size[0] > 40 and size[1] == 20, (url, size)
