"""The HTTP application factory: thin handlers, logic in plain functions elsewhere."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from service import access, api, badges, dashboard, health, rebuild, webhooks
from service.access import AccessGate
from service.datawatch import DataWatcher
from service.headers import SecurityHeaders, server_error
from service.notifications import Notifier
from service.pullcomments import PullCommenter
from service.reconcile import Reconciler
from service.scheduler import Scheduler
from service.statusreporter import StatusReporter
from service.tracing import TraceContext
from service.writer import DeliveryWriter
from trainhook.runtime import Runtime
from trainhook.settings import Settings


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    runtime: Runtime = app.state.runtime
    # Feedback to the forges, in the background: commit statuses (repositories with a forge
    # token) and, with TRAINHOOK_RECONCILE_INTERVAL, redelivery of missed GitHub deliveries.
    reporter = StatusReporter(runtime.settings, runtime.engine).start()
    reconciler = Reconciler(runtime.settings, runtime.engine).start()
    # Build notifications ([[repos.notify]]), sent the same way as the commit statuses.
    notifier = Notifier(runtime.settings, runtime.engine).start()
    # The comment on each pull/merge request, kept up to date the same way.
    commenter = PullCommenter(runtime.settings, runtime.engine).start()
    # Repositories' `schedule` ticks, each fired by exactly one replica.
    scheduler = Scheduler(runtime.settings, runtime.engine, runtime.queue.notify).start()
    # New generations of gs:// training data, from the buckets' Pub/Sub notifications.
    watcher = DataWatcher(runtime.settings, runtime.engine, runtime.queue.notify).start()
    async with dashboard.lifespan(app):
        try:
            yield
        finally:
            app.state.writer.stop()
            reporter.stop()
            reconciler.stop()
            notifier.stop()
            commenter.stop()
            scheduler.stop()
            watcher.stop()


def trace_project(settings: Settings) -> str | None:
    return settings.gcp_project or settings.pubsub_project or None


def create_app(runtime: Runtime) -> Starlette:
    """The Starlette app serving webhooks, /rebuild, the status pages, the API and health."""
    routes: list[BaseRoute] = [
        *webhooks.routes,
        *rebuild.routes,
        *api.routes,
        *health.routes,
        *badges.routes,
        *access.routes,
        *dashboard.routes,
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(SecurityHeaders),
            # Traces are named in the project the service runs in (GOOGLE_CLOUD_PROJECT
            # unless TRAINHOOK_GCP_PROJECT or TRAINHOOK_PUBSUB_PROJECT says otherwise).
            Middleware(TraceContext, project=trace_project(runtime.settings)),
            # Inside the headers: a refusal by the access gate gets them too.
            Middleware(AccessGate),
        ],
        exception_handlers={500: server_error},
    )
    app.state.runtime = runtime
    app.state.writer = DeliveryWriter(runtime.engine)
    return app
