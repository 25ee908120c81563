"""The `trainhook` command line (contract): up, serve, worker, migrate, train, rebuild, replay;
and setup-pubsub, snapshot, dead-letters for the Pub/Sub queue."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from trainhook.errors import ConfigError, TrainhookError
from trainhook.logs import configure_logging

log = logging.getLogger("trainhook")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("trainhook")
    except PackageNotFoundError:
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trainhook",
        description="Turn git pushes into trained, built and deployed ML models.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"trainhook {_version()}")
    # `-v` after the command too (`trainhook worker -v`); SUPPRESS keeps a -v given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    real_add_parser = sub.add_parser

    def add_parser(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return real_add_parser(name, parents=[common], **kwargs)

    sub.add_parser = add_parser  # type: ignore[method-assign]

    up = sub.add_parser("up", help="all-in-one: receiver + worker + status page in one process")
    up.add_argument("--host", default="127.0.0.1", help="interface to listen on [127.0.0.1]")
    up.add_argument("--port", type=int, default=8000, help="port to listen on [8000]")
    up.add_argument(
        "--demo",
        action="store_true",
        help="create the bundled example repository and send it one signed push",
    )
    up.add_argument("--workers", type=int, default=1, help="worker threads [1]")

    serve = sub.add_parser("serve", help="receiver + status page only")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)

    worker = sub.add_parser("worker", help="worker only")
    worker.add_argument("--burst", action="store_true", help="drain the queue and exit")

    sub.add_parser("migrate", help="alembic upgrade head with the configured database URL")

    train = sub.add_parser("train", help="the trainer alone (same as python -m trainer train)")
    train.add_argument("args", nargs=argparse.REMAINDER, help="DATA --out DIR [options]")

    rebuild = sub.add_parser("rebuild", help="queue a build by hand")
    rebuild.add_argument("repo", help="repository full name, as in the repositories file")
    which = rebuild.add_mutually_exclusive_group()
    which.add_argument("--ref", help="branch or full ref [refs/heads/main]")
    which.add_argument("--sha", help="exact commit id")
    rebuild.add_argument("--force", action="store_true", help="ignore every cache")
    rebuild.add_argument(
        "--watch",
        action="store_true",
        help="queue it through the service at TRAINHOOK_URL and follow it to its end "
        "(exit 0 when it succeeded, 1 otherwise)",
    )

    following = "; talks to the service at TRAINHOOK_URL"
    builds = sub.add_parser("builds", help="list builds, newest first" + following)
    builds.add_argument("--repo", help="only this repository")
    builds.add_argument("--branch", help="only this branch")
    builds.add_argument("--status", help="only builds with this status")
    builds.add_argument("--limit", type=int, default=20, help="at most this many [20]")
    build = sub.add_parser("build", help="show one build and its stages" + following)
    build.add_argument("build_id", type=int, metavar="N")
    watch = sub.add_parser(
        "watch",
        help="follow a build to its end; exit 0 when it succeeded, 1 otherwise" + following,
    )
    watch.add_argument("build_id", type=int, metavar="N")
    logs = sub.add_parser("logs", help="print a build's stage logs" + following)
    logs.add_argument("build_id", type=int, metavar="N")
    logs.add_argument("stage", nargs="?", help="only this stage (checkout, test, train, ...)")
    logs.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="keep printing until the build ends (exit 0 when it succeeded, 1 otherwise)",
    )
    cancel = sub.add_parser(
        "cancel", help="cancel a queued or running build (needs TRAINHOOK_API_TOKEN)" + following
    )
    cancel.add_argument("build_id", type=int, metavar="N")

    replay = sub.add_parser("replay", help="re-process past builds")
    replay.add_argument("--since", help="ISO time or a duration like 3d, 12h")
    replay.add_argument("--until", help="ISO time or a duration like 1h")
    replay.add_argument("--status", help="only builds with this status")
    replay.add_argument("--repo", help="only this repository")
    replay.add_argument("--force", action="store_true", help="re-run succeeded builds too")
    replay.add_argument(
        "--seek",
        action="store_true",
        help="instead, seek the Pub/Sub subscription to --since (or --snapshot) so Pub/Sub "
        "delivers those jobs again; finished ones are acked without work",
    )
    replay.add_argument("--snapshot", help="with --seek: a snapshot made by `trainhook snapshot`")
    replay.add_argument("--dry-run", action="store_true", help="say what would be replayed")

    sub.add_parser(
        "setup-pubsub",
        help="create the Pub/Sub topic, subscription and dead-letter pair, and for gs:// "
        "data the buckets' notifications with their topic and subscription (idempotent)",
    )
    snapshot = sub.add_parser("snapshot", help="snapshot the Pub/Sub subscription (for replay)")
    snapshot.add_argument("name", help="snapshot name (3-255 characters, starting with a letter)")
    dead = sub.add_parser("dead-letters", help="list jobs that gave up, or requeue one")
    dead.add_argument("--requeue", type=int, metavar="BUILD_ID", help="queue a new attempt")
    dead.add_argument("--limit", type=int, default=200, help="list at most this many [200]")

    tokens = sub.add_parser("tokens", help="per-person API tokens: add, list, revoke")
    tokens_sub = tokens.add_subparsers(dest="action", required=True)
    add = tokens_sub.add_parser("add", help="make a token for NAME (printed once)")
    add.add_argument("name", help="who the token is for (shown in the audit trail)")
    add.add_argument("--read", action="store_true", help="a read-only token (the dashboard)")
    tokens_sub.add_parser("list", help="list tokens (names and scopes, never the tokens)")
    revoke = tokens_sub.add_parser("revoke", help="revoke NAME's token")
    revoke.add_argument("name")

    releases = sub.add_parser(
        "releases",
        help="list a repository's container releases here: which serves now, its stable URL",
    )
    releases.add_argument("repo", help="repository full name, as in the repositories file")
    releases.add_argument("--json", action="store_true", help="as JSON, for scripts")
    rollback = sub.add_parser(
        "rollback",
        help="serve an earlier release at the stable URL again, after the deploy's health "
        "and smoke checks (the current one keeps serving when they fail)",
    )
    rollback.add_argument("repo", help="repository full name, as in the repositories file")
    rollback.add_argument(
        "version", nargs="?", help="the release to serve [the last one before the current]"
    )

    reconcile = sub.add_parser(
        "reconcile",
        help="redeliver GitHub webhook deliveries that failed or that trainhook has no record of",
    )
    reconcile.add_argument("--since", default="3d", help="ISO time or a duration [3d]")
    reconcile.add_argument("--repo", help="only this repository")
    reconcile.add_argument("--dry-run", action="store_true", help="say what would be redelivered")

    config = sub.add_parser(
        "cloudbuild-config",
        help="print the Cloud Build request trainhook submits for a repository (to read it)",
    )
    config.add_argument("repo", help="repository full name, as in the repositories file")
    config.add_argument("--format", choices=("yaml", "json"), default="yaml", help="[yaml]")
    config.add_argument("--sha", help="commit to show (default: a COMMIT_SHA placeholder)")
    config.add_argument("--build-id", type=int, default=0, help="trainhook build id to show [0]")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = [a for a in argv[:1] if a in ("-v", "--verbose")]
    rest = argv[len(verbose) :]
    if rest[:1] == ["train"]:
        # Straight to the trainer, so `trainhook train --help` shows the trainer's options.
        from trainer.cli import main as train_main

        configure_logging(os.environ, verbose=bool(verbose))
        options = rest[1:]
        command = options if options[:1] == ["train"] else ["train", *options]
        return train_main(command, prog="trainhook")
    args = _parser().parse_args(argv)
    configure_logging(os.environ, verbose=args.verbose)
    try:
        from trainhook.cli import commands

        return int(commands.run(args))
    except ConfigError as exc:
        print(f"trainhook: configuration error: {exc}", file=sys.stderr)
        return 2
    except TrainhookError as exc:
        print(f"trainhook: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
