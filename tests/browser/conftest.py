"""Browser fixtures: one headless Chromium per module, the real app under uvicorn per test."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.browser.cdp import Browser, Page
from tests.browser.server import LiveServer, live_server
from tests.support.required import unavailable
from trainhook.db import make_engine
from trainhook.runtime import build_runtime
from trainhook.settings import Settings

CHROMIUM = os.environ.get("TRAINHOOK_CHROMIUM", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
DOCS_SHOTS = ROOT / "docs" / "screenshots"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        unavailable(
            "BROWSER",
            f"no Chromium at {CHROMIUM} (apt-get install chromium, or set TRAINHOOK_CHROMIUM)",
        )
    chromium = Browser(CHROMIUM)
    yield chromium
    chromium.close()


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[sa.Engine]:
    """Browser tests run on SQLite only: the page, not the database, is under test here."""
    eng = make_engine(sqlite_url)
    yield eng
    eng.dispose()


@pytest.fixture
def site(
    sqlite_url: str, engine: sa.Engine, make_settings: Callable[..., Settings]
) -> Iterator[LiveServer]:
    with live_server(build_runtime(make_settings(sqlite_url), engine)) as server:
        yield server


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    tab = browser.new_page()
    yield tab
    tab.call("Page.close")


def save_screenshot(page: Page, name: str, docs: bool = False) -> Path:
    """Into test-artifacts/ always; the README's ones into docs/screenshots/ too when run with
    TRAINHOOK_SCREENSHOTS=docs."""
    path = page.screenshot(ARTIFACTS / name)
    if docs and os.environ.get("TRAINHOOK_SCREENSHOTS") == "docs":
        DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_SHOTS / name)
    return path
