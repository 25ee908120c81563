"""The HTTP application factory: thin handlers, logic in plain functions elsewhere."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from service import api, dashboard, health, rebuild, webhooks
from service.writer import DeliveryWriter
from trainhook.runtime import Runtime


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with dashboard.lifespan(app):
        try:
            yield
        finally:
            app.state.writer.stop()


def create_app(runtime: Runtime) -> Starlette:
    """The Starlette app serving webhooks, /rebuild, the status pages, the API and health."""
    routes: list[BaseRoute] = [
        *webhooks.routes,
        *rebuild.routes,
        *api.routes,
        *health.routes,
        *dashboard.routes,
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.runtime = runtime
    app.state.writer = DeliveryWriter(runtime.engine)
    return app
