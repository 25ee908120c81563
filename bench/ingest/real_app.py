"""The real trainhook app for uvicorn's `--factory real_app:create`, built from the environment.

Exactly what the service runs: settings from the environment, the runtime built from them
and the full Starlette app (webhooks, /rebuild, pages, API, health).
"""

from __future__ import annotations

from starlette.applications import Starlette

from service.app import create_app
from trainhook.runtime import build_runtime
from trainhook.settings import load_settings


def create() -> Starlette:
    return create_app(build_runtime(load_settings()))
