"""What each CLI command does. The composition root: the only core module that wires the
service and the worker together (see the import-direction test)."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import threading
from collections.abc import Callable
from typing import Any

from trainhook import db
from trainhook.cli.releases import cmd_releases, cmd_rollback
from trainhook.cli.tokens import cmd_tokens
from trainhook.errors import TrainhookError
from trainhook.logs import choose_format
from trainhook.settings import Settings, load_settings


def _serve(runtime: Any, host: str, port: int, on_started: Callable[[], None] | None) -> None:
    import uvicorn

    from service.app import create_app
    from service.httpguard import guarded_protocol

    # Slow clients: uvicorn alone waits forever for a request head and keeps every header
    # line; the guarded protocol bounds both (TRAINHOOK_HEADER_TIMEOUT, 64 KiB).
    config = uvicorn.Config(
        create_app(runtime),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        # uvicorn's own logging config gives its loggers handlers of their own, in text:
        # without it their lines go through trainhook's (JSON in prod) like every other.
        log_config=None,
        http=guarded_protocol(runtime.settings.header_timeout),
    )
    server = uvicorn.Server(config)
    if on_started is not None:

        def wait_then_call() -> None:
            while not server.started and not server.should_exit:
                threading.Event().wait(0.05)
            if server.started:
                on_started()

        threading.Thread(target=wait_then_call, name="on-started", daemon=True).start()
    server.run()


def cmd_up(args: argparse.Namespace) -> int:
    from trainhook.cli.demo import DemoSession, prepare_demo
    from trainhook.runtime import build_runtime
    from worker.loop import Worker

    demo: DemoSession | None = None
    if args.demo:
        demo = prepare_demo(os.environ)
    settings = load_settings()
    db.upgrade(settings.database_url)
    runtime = build_runtime(settings)
    runtime.start_background()
    registry = _start_registry(settings)
    serving = _start_serving(settings)
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=Worker(runtime, owner=f"up-{os.getpid()}-{i}").run,
            args=(stop,),
            name=f"worker-{i}",
        )
        for i in range(max(1, args.workers))
    ]
    for thread in threads:
        thread.start()
    base = f"http://{args.host}:{args.port}"

    def started() -> None:
        urls = serving.urls if serving is not None else None
        print_banner(settings, base, demo.token_hint if demo is not None else None, urls)
        if demo is not None:
            demo.push(base, runtime)

    try:
        _serve(runtime, args.host, args.port, started)
    finally:
        # uvicorn has handled SIGTERM/SIGINT: let the workers finish their current stage.
        stop.set()
        for thread in threads:
            thread.join()
        runtime.close()
        if serving is not None:
            # The containers keep running: the next `up` re-adopts them.
            serving.close()
        if registry is not None:
            from worker.container.registry import stop_registry

            stop_registry(registry)
    return 0


def _start_serving(settings: Settings) -> Any:
    """The stable URL of every repository, after re-adopting this home's containers; None
    when the builder runs no containers (bundle, cloudbuild)."""
    from worker.container.serving import start_serving

    return start_serving(settings)


def _start_registry(settings: Settings) -> subprocess.Popen[bytes] | None:
    """A loopback registry for the container builder when TRAINHOOK_REGISTRY is unset and
    the distribution registry is installed (else the push stage says what is missing)."""
    from worker.container.engine import resolve
    from worker.container.registry import start_local_registry

    if settings.registry or resolve(settings.builder)[0] not in ("docker", "podman"):
        return None
    process = start_local_registry(settings.home)
    if process is None:
        print("no registry binary (docker-registry): set TRAINHOOK_REGISTRY", flush=True)
    return process


TOKEN_HINT = "$TRAINHOOK_API_TOKEN"


def print_banner(
    settings: Settings, base: str, token: str | None = None, urls: dict[str, str] | None = None
) -> None:
    """How to reach the service, and each repository's model at its stable URL (`urls`, when
    the builder runs containers). `token` is how a shell gets the API token (default: from
    $TRAINHOOK_API_TOKEN), never the token itself: this goes to the terminal and, in a
    container, into the logs."""
    token = token or TOKEN_HINT
    repo = settings.repos[0].name if settings.repos else "OWNER/REPO"
    banner = (
        f"\ntrainhook is up ({settings.env}, queue={settings.queue}, "
        f"builder={_builder_said(settings)})\n"
        f"  status page : {base}/\n"
        f"  webhook URL : {base}/webhooks/github  (content type application/json)\n"
        f'  rebuild     : curl -X POST {base}/rebuild -H "Authorization: Bearer {token}" '
        f'-H \'Content-Type: application/json\' -d \'{{"repo": "{repo}", "ref": "main"}}\'\n'
    )
    for name, url in (urls or {}).items():
        banner += f"  model URL   : {url}  ({name}, the same for every version)\n"
    if choose_format(os.environ) == "json":
        # A log collector reads this output: one JSON line, like every other.
        logging.getLogger("trainhook").info(banner.strip())
    else:
        print(banner, flush=True)


def _builder_said(settings: Settings) -> str:
    """The builder that runs, and plainly why when `local` found no container engine."""
    from worker.container.engine import resolve

    chosen, note = resolve(settings.builder)
    if chosen == settings.builder:
        return chosen
    return f"{settings.builder} -> {chosen}" + (f": {note}" if note else "")


def cmd_serve(args: argparse.Namespace) -> int:
    from trainhook.runtime import build_runtime

    settings = load_settings()
    runtime = build_runtime(settings)
    runtime.start_background()
    try:
        _serve(runtime, args.host, args.port, lambda: print_banner(settings, _base(args)))
    finally:
        runtime.close()
    return 0


def _base(args: argparse.Namespace) -> str:
    return f"http://{args.host}:{args.port}"


def cmd_worker(args: argparse.Namespace) -> int:
    from worker.loop import run_worker_process

    settings = load_settings()
    # A worker that runs containers also keeps their stable URLs up (when no other process
    # of this home does); a burst worker exits when the queue is empty, so it does not.
    serving = None if args.burst else _start_serving(settings)
    try:
        run_worker_process(settings, burst=args.burst)
    finally:
        if serving is not None:
            serving.close()
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = load_settings(require_repos=False)
    db.upgrade(settings.database_url)
    print(f"database is at revision {_revision(settings)}")
    return 0


def _revision(settings: Settings) -> str | None:
    engine = db.make_engine(settings.database_url)
    try:
        return db.current_revision(engine)
    finally:
        engine.dispose()


def cmd_rebuild(args: argparse.Namespace) -> int:
    from trainhook.cli.follow import ServiceClient, watch

    if args.watch or os.environ.get("TRAINHOOK_URL"):
        # Through the service: works against a remote instance, and --watch follows it.
        client = ServiceClient.from_env(os.environ)
        body: dict[str, Any] = {"repo": args.repo, "force": args.force}
        body.update({"sha": args.sha} if args.sha else {"ref": args.ref or "main"})
        build_id = client.rebuild(body)
        print(f"queued build {build_id}: {client.url(f'/builds/{build_id}')}", flush=True)
        return watch(client, build_id) if args.watch else 0
    return _rebuild_here(args)


def _rebuild_here(args: argparse.Namespace) -> int:
    from trainhook import audit
    from trainhook.runtime import build_runtime
    from trainhook.triggers import TriggerError, request_rebuild

    runtime = build_runtime(load_settings())
    try:
        ref = args.ref if args.ref or args.sha else "main"
        build_id = request_rebuild(runtime, args.repo, ref=ref, sha=args.sha, force=args.force)
        # Straight to the database, so no token says who: the user at this terminal does.
        action = "rebuild --force" if args.force else "rebuild"
        detail = f"{args.repo} " + (f"sha {args.sha}" if args.sha else f"ref {ref}")
        with runtime.engine.begin() as conn:
            audit.write(conn, audit.cli_actor(), action, result_build_id=build_id, detail=detail)
    except TriggerError as exc:
        raise TrainhookError(exc.message) from None
    finally:
        runtime.close()
    base = runtime.settings.public_url
    print(f"queued build {build_id}: {base}/builds/{build_id}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from trainhook.cli.replay import ReplayFilter, replay
    from trainhook.queue.outbox import unpublished
    from trainhook.runtime import build_runtime

    if args.seek or args.snapshot:
        return _seek(args)
    runtime = build_runtime(load_settings())
    try:
        flt = ReplayFilter.parse(args.since, args.until, args.status, args.repo)
        report = replay(runtime, flt, force=args.force, dry_run=args.dry_run)
    finally:
        runtime.close()  # with Pub/Sub: publishes the new builds' jobs first
    for line in report.lines():
        print(line)
    if runtime.settings.queue == "pubsub" and report.queued and not args.dry_run:
        left = unpublished(runtime.engine, [new for _, new in report.queued])
        if left:
            print(f"{len(left)} not yet on Pub/Sub (the service's sweeper publishes them): {left}")
        runtime.engine.dispose()
    return 0


def _seek(args: argparse.Namespace) -> int:
    from trainhook.cli.replay import parse_time
    from trainhook.queue.admin import published_since, seek
    from trainhook.queue.pubsubclients import PubSubClients

    settings = load_settings()
    if settings.queue != "pubsub":
        raise TrainhookError("--seek needs TRAINHOOK_QUEUE=pubsub (the SQL queue has no history)")
    if args.seek and not (args.since or args.snapshot):
        raise TrainhookError("--seek needs --since TIME or --snapshot NAME")
    if args.until or args.status or args.repo or args.force or args.dry_run:
        raise TrainhookError("--seek replays everything after a point: no other filters")
    since = parse_time(args.since) if args.since and not args.snapshot else None
    clients = PubSubClients.from_settings(settings)
    try:
        print(seek(clients, to_time=since, snapshot=args.snapshot))
    finally:
        clients.close()
    if since is not None:
        engine = db.make_engine(settings.database_url)
        try:
            by_status = published_since(engine, since)
        finally:
            engine.dispose()
        print(_seek_report(by_status))
    return 0


def _seek_report(by_status: dict[str, int]) -> str:
    finished = by_status.get("done", 0) + by_status.get("dead", 0)
    live = by_status.get("queued", 0) + by_status.get("running", 0)
    return (
        f"{sum(by_status.values())} job message(s) published since then will be delivered "
        f"again: {finished} finished (acked without work), {live} queued or running (run once)"
    )


def cmd_setup_pubsub(args: argparse.Namespace) -> int:
    from trainhook.queue.admin import setup_data_events, setup_pubsub
    from trainhook.queue.pubsubclients import PubSubClients

    settings = load_settings(require_repos=False)
    if not settings.pubsub_project:
        raise TrainhookError("set TRAINHOOK_PUBSUB_PROJECT (or GOOGLE_CLOUD_PROJECT)")
    clients = PubSubClients.from_settings(settings)
    try:
        for resource in setup_pubsub(settings, clients):
            print(resource.line())
        # Repositories training on gs:// objects: their buckets' notifications of new data.
        for resource in setup_data_events(settings, clients, None):
            print(resource.line())
    finally:
        clients.close()
    return 0


def cmd_snapshot(args: argparse.Namespace) -> int:
    from trainhook.queue.admin import create_snapshot
    from trainhook.queue.pubsubclients import PubSubClients

    settings = load_settings(require_repos=False)
    if not settings.pubsub_project:
        raise TrainhookError("set TRAINHOOK_PUBSUB_PROJECT (or GOOGLE_CLOUD_PROJECT)")
    clients = PubSubClients.from_settings(settings)
    try:
        print(f"created {create_snapshot(clients, args.name)}")
    finally:
        clients.close()
    return 0


def cmd_dead_letters(args: argparse.Namespace) -> int:
    from trainhook.queue.deadletters import list_dead, reconcile, requeue
    from trainhook.runtime import build_runtime

    runtime = build_runtime(load_settings())
    try:
        if args.requeue is not None:
            new_id = requeue(runtime.engine, runtime.queue, args.requeue)
            print(f"requeued build {args.requeue} as build {new_id}: /builds/{new_id}")
            return 0
        queue: Any = runtime.queue
        if runtime.settings.queue == "pubsub":
            for line in reconcile(runtime.engine, queue.clients, runtime.settings):
                print(f"dead-letter subscription: {line}")
        dead = list_dead(runtime.engine, limit=args.limit)
        for job in dead:
            print(job.line())
        print(f"{len(dead)} dead job(s)")
    finally:
        runtime.close()
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    from service.reconcile import reconcile
    from trainhook.cli.replay import parse_time

    settings = load_settings()
    if args.repo and not any(r.name == args.repo for r in settings.repos):
        raise TrainhookError(f"repository {args.repo!r} is not configured")
    engine = db.make_engine(settings.database_url)
    try:
        reports = reconcile(
            settings, engine, parse_time(args.since), repo=args.repo, dry_run=args.dry_run
        )
    finally:
        engine.dispose()
    for report in reports:
        for line in report.lines:
            print(line)
    return 1 if any(report.failed for report in reports) else 0


def cmd_cloudbuild_config(args: argparse.Namespace) -> int:
    import json

    from trainhook.cloudsettings import check_cloudbuild
    from worker.cloudbuild.render_yaml import to_yaml
    from worker.cloudbuild.request import build_request, example_inputs

    settings = load_settings()
    check_cloudbuild(settings)
    repo = settings.repo(args.repo)
    if repo is None:
        raise TrainhookError(f"repository {args.repo!r} is not configured")
    inputs = example_inputs(settings, repo, sha=args.sha, build_id=args.build_id)
    request = build_request(settings, repo, inputs)
    if args.format == "json":
        print(json.dumps(request, indent=2, ensure_ascii=False))
    else:
        print(f"# The Cloud Build request trainhook submits for {repo.name} (build")
        print(f"# {inputs.build_id}, commit {inputs.sha}); per-build values are substitutions.")
        print(to_yaml(request), end="")
    return 0


def cmd_builds(args: argparse.Namespace) -> int:
    from trainhook.cli.follow import ServiceClient, build_line

    client = ServiceClient.from_env(os.environ)
    found = client.builds(repo=args.repo, branch=args.branch, status=args.status, limit=args.limit)
    for build in found:
        print(build_line(client, build))
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from trainhook.cli.follow import ServiceClient, show_build

    client = ServiceClient.from_env(os.environ)
    for line in show_build(client, client.build(args.build_id)):
        print(line)
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from trainhook.cli.follow import ServiceClient, watch

    client = ServiceClient.from_env(os.environ)
    return watch(client, args.build_id, lambda line: print(line, flush=True))


def cmd_logs(args: argparse.Namespace) -> int:
    from trainhook.cli.follow import ServiceClient, follow_logs

    client = ServiceClient.from_env(os.environ)
    code = follow_logs(
        client, args.build_id, args.stage, lambda t: print(t, flush=True), follow=args.follow
    )
    # Without --follow the logs were printed: that succeeded, whatever the build did.
    return code if args.follow else 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from trainhook.cli.follow import ServiceClient

    client = ServiceClient.from_env(os.environ)
    client.cancel(args.build_id)
    print(f"cancelled build {args.build_id}: {client.url(f'/builds/{args.build_id}')}")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "builds": cmd_builds,
    "build": cmd_build,
    "watch": cmd_watch,
    "cancel": cmd_cancel,
    "logs": cmd_logs,
    "up": cmd_up,
    "serve": cmd_serve,
    "worker": cmd_worker,
    "migrate": cmd_migrate,
    "rebuild": cmd_rebuild,
    "replay": cmd_replay,
    "setup-pubsub": cmd_setup_pubsub,
    "snapshot": cmd_snapshot,
    "dead-letters": cmd_dead_letters,
    "reconcile": cmd_reconcile,
    "cloudbuild-config": cmd_cloudbuild_config,
    "tokens": cmd_tokens,
    "releases": cmd_releases,
    "rollback": cmd_rollback,
}


def run(args: argparse.Namespace) -> int:
    return COMMANDS[args.command](args)
