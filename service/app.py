"""The HTTP application factory: thin handlers, logic in plain functions elsewhere."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from service import api, dashboard, health, rebuild, webhooks
from trainhook.runtime import Runtime


def create_app(runtime: Runtime) -> Starlette:
    """The Starlette app serving webhooks, /rebuild, the status pages, the API and health."""
    routes: list[BaseRoute] = [
        *webhooks.routes,
        *rebuild.routes,
        *api.routes,
        *health.routes,
        *dashboard.routes,
    ]
    app = Starlette(routes=routes, lifespan=dashboard.lifespan)
    app.state.runtime = runtime
    return app
