"""`trainhook releases REPO` and `trainhook rollback REPO [VERSION]`: the container releases of
a repository on this machine (trainhook/releases.py), and switching its stable URL back to one
of them with the deploy's own checks (worker/container/release.py, `deliver`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import sqlalchemy as sa

from trainhook.deployconfig import DeployConfig
from trainhook.errors import TrainhookError
from trainhook.releases import Releases
from trainhook.settings import Settings, load_settings


def _repo_releases(settings: Settings, name: str) -> tuple[Any, Releases]:
    repo = settings.repo(name)
    if repo is None:
        known = ", ".join(r.name for r in settings.repos) or "none"
        raise TrainhookError(f"repository {name!r} is not configured (configured: {known})")
    return repo, Releases(settings.home, repo.slug)


def release_rows(releases: Releases) -> list[dict[str, Any]]:
    """Every pushed version, newest first, each saying whether it serves now."""
    current = releases.current() or {}
    return [
        {
            "version": r["version"],
            "build_id": r.get("build_id"),
            "sha": r.get("sha"),
            "digest": r.get("digest"),
            "image": r.get("image"),
            "created": r.get("created"),
            "served_at": r.get("served_at"),
            "serving": r["version"] == current.get("version")
            and r.get("digest") == current.get("digest"),
        }
        for r in reversed(releases.records())
    ]


def cmd_releases(args: argparse.Namespace) -> int:
    settings = load_settings()
    repo, releases = _repo_releases(settings, args.repo)
    rows = release_rows(releases)
    url = releases.known_url()
    if args.json:
        print(json.dumps({"repo": repo.name, "url": url, "releases": rows}, indent=2))
        return 0
    print(f"{repo.name}: {url or 'no stable URL yet (no container release)'}")
    if not rows:
        print("  no releases: no build of this repository has pushed an image here")
        return 0
    print(f"  {'':2}{'VERSION':<26}{'BUILD':>6}  {'SHA':<13}{'DIGEST':<20}CREATED")
    for row in rows:
        mark = "* " if row["serving"] else "  "
        digest = str(row["digest"] or "")[:19]
        print(
            f"  {mark}{row['version']:<26}{row['build_id'] or '':>6}  "
            f"{str(row['sha'] or '')[:12]:<13}{digest:<20}{row['created'] or ''}"
        )
    if not any(row["serving"] for row in rows):
        print("  (none serves now)")
    else:
        print("  * serves now")
    return 0


def rollback_target(releases: Releases, version: str | None) -> dict[str, Any]:
    """The record to roll back to: `version`, or the newest release older than the current
    one that has served before (a version that never passed its checks is no way back)."""
    records = releases.records()
    if version is not None:
        for record in records:
            if record["version"] == version:
                return record
        known = ", ".join(r["version"] for r in reversed(records)) or "none"
        raise TrainhookError(f"no release {version!r} (known: {known})")
    current = releases.current() or {}
    older = [r for r in records if r["version"] != current.get("version")]
    if current.get("version"):
        index = next(
            (i for i, r in enumerate(records) if r["version"] == current["version"]), len(records)
        )
        older = records[:index]
    served = [r for r in older if r.get("served_at")]
    if not served:
        raise TrainhookError(
            f"no release before {current.get('version') or 'the current one'} has served; "
            "name a VERSION (see `trainhook releases`)"
        )
    return served[-1]


def cmd_rollback(args: argparse.Namespace) -> int:
    from worker.container.release import Containers, Target, deliver
    from worker.container.serving import container_engine
    from worker.local.healthcheck import PROBE_TEXTS
    from worker.stage import StageFailed

    settings = load_settings()
    repo, releases = _repo_releases(settings, args.repo)
    engine = container_engine(settings)
    if engine is None:
        raise TrainhookError(
            f"rollback runs containers: TRAINHOOK_BUILDER={settings.builder} runs none "
            "(use local with docker or podman, docker or podman)"
        )
    record = rollback_target(releases, args.version)
    was = (releases.current() or {}).get("version") or "none"
    print(f"{repo.name}: rolling back from {was} to {record['version']} ({record['image']})")
    target = Target(record, repo.deploy or DeployConfig(), PROBE_TEXTS)
    try:
        _, detail = deliver(
            Containers(engine), releases, target, lambda line: print(line, end="", flush=True),
            os.environ,
        )  # fmt: skip
    except StageFailed as exc:
        _audit(settings, f"rollback failed: {repo.name} {was} -> {record['version']}", record)
        raise TrainhookError(f"rollback to {record['version']} failed: {exc}") from None
    _audit(settings, f"{repo.name} {was} -> {record['version']}", record)
    print(detail, file=sys.stdout, flush=True)
    return 0


def _audit(settings: Settings, detail: str, record: dict[str, Any]) -> None:
    """The trail says who switched the model serving users, as it does for a rebuild."""
    from trainhook import audit
    from trainhook.runtime import build_runtime

    # The build id goes in the detail, not the build column: releases are files on this
    # machine and their builds may live in another database (or none, after a reset).
    detail = f"{detail} (build {record.get('build_id')})"
    try:
        runtime = build_runtime(settings)
        try:
            with runtime.engine.begin() as conn:
                audit.write(conn, audit.cli_actor(), "rollback", detail=detail[:500])
        finally:
            runtime.close()
    except (sa.exc.SQLAlchemyError, TrainhookError) as exc:
        # The switch has happened (or failed) already: say so, do not hide it behind this.
        print(f"trainhook: not recorded in the audit trail: {exc}", file=sys.stderr)
