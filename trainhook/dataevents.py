"""Data changes in Cloud Storage: which repositories an object event concerns, and the build
it queues (trigger `data`), exactly once per object generation.

A bucket notification (OBJECT_FINALIZE, payload JSON_API_V1; made by `trainhook
setup-pubsub`) publishes one message per new object generation, and Pub/Sub delivers each at
least once. An event is recorded as a `data_events` row, unique per (provider, repository,
bucket, object, generation), in the same transaction as the build it queues: a redelivered
message, or the same generation announced twice, conflicts and queues nothing.

Several generations in a row (an upload storm) coalesce: an event that finds a `data` build
of the branch still `queued` joins it instead of queueing another. That build has not read
the object's metadata yet (its hash stage runs after it starts), so it trains on the newest
generation, the one the later event announced. A build that already started has read it, so
an event then queues a new build. A data build whose model key turns out to be the deployed
one (the same bytes uploaded again, or the watched object is not the `data` entry chosen)
ends `superseded` at the hash stage, as a scheduled one does (worker/hash/keys.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from trainhook.builds import BuildSpec, create_build
from trainhook.gcs import parse_gs_url
from trainhook.models import builds, data_events, utcnow
from trainhook.repos import RepoConfig

log = logging.getLogger(__name__)

FINALIZE = "OBJECT_FINALIZE"  # a new object generation (a create or an overwrite)


class BadEvent(ValueError):
    """A message that is not a Cloud Storage object notification trainhook can read."""


@dataclass(frozen=True)
class ObjectEvent:
    """One Cloud Storage notification, from its message attributes."""

    event_type: str
    bucket: str
    name: str
    generation: int

    @property
    def url(self) -> str:
        return f"gs://{self.bucket}/{self.name}"


def parse_event(attributes: Mapping[str, str]) -> ObjectEvent:
    """The event in a notification message's attributes (every payload format carries them:
    eventType, bucketId, objectId, objectGeneration). Raises BadEvent naming what is missing."""
    missing = [k for k in ("eventType", "bucketId", "objectId") if not attributes.get(k)]
    if missing:
        raise BadEvent(f"not a Cloud Storage notification: no {', '.join(missing)}")
    try:
        generation = int(attributes.get("objectGeneration") or "")
    except ValueError:
        raise BadEvent(
            f"objectGeneration {attributes.get('objectGeneration')!r} is not a number"
        ) from None
    return ObjectEvent(
        attributes["eventType"], attributes["bucketId"], attributes["objectId"], generation
    )


def watched_objects(repos: Iterable[RepoConfig]) -> dict[tuple[str, str], list[RepoConfig]]:
    """(bucket, object name) -> the repositories whose `data` names that gs:// object. `data`
    names objects exactly (no globs for gs://: trainhook/repos.py), so an event matches by
    equality."""
    watched: dict[tuple[str, str], list[RepoConfig]] = {}
    for repo in repos:
        for entry in repo.data:
            if entry.startswith("gs://"):
                key = parse_gs_url(entry)
                if repo not in watched.setdefault(key, []):
                    watched[key].append(repo)
    return watched


@dataclass(frozen=True)
class Taken:
    """What one event did for one repository: `queued` a new build, `joined` a queued one,
    or was a `duplicate` of an event already recorded (its build, if any)."""

    repo: str
    outcome: str
    build_id: int | None


def _insert_event(conn: sa.Connection) -> sa.Insert:
    # ON CONFLICT DO NOTHING: a duplicate leaves the transaction usable (no savepoint) and
    # two replicas taking the same event race on the unique key, not on a read.
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    cols = data_events.c
    return dialect.insert(data_events).on_conflict_do_nothing(
        index_elements=[cols.provider, cols.repo, cols.bucket, cols.object, cols.generation]
    )


def _key(repo: RepoConfig, event: ObjectEvent) -> sa.ColumnElement[bool]:
    cols = data_events.c
    return sa.and_(
        cols.provider == repo.provider,
        cols.repo == repo.name,
        cols.bucket == event.bucket,
        cols.object == event.name,
        cols.generation == event.generation,
    )


def record(engine: sa.Engine, repo: RepoConfig, event: ObjectEvent) -> Taken:
    """Record `event` for `repo` and queue (or join) its build, in one transaction."""
    ref = f"refs/heads/{repo.scheduled_branch}"
    with engine.begin() as conn:
        inserted = conn.execute(
            _insert_event(conn)
            .values(
                provider=repo.provider,
                repo=repo.name,
                bucket=event.bucket,
                object=event.name,
                generation=event.generation,
                build_id=None,
                received_at=utcnow(),
            )
            .returning(data_events.c.id)
        ).first()
        if inserted is None:  # the row existed: nothing was inserted
            seen = conn.execute(sa.select(data_events.c.build_id).where(_key(repo, event)))
            return Taken(repo.name, "duplicate", seen.scalar())
        waiting = conn.execute(
            sa.select(sa.func.max(builds.c.id)).where(
                builds.c.provider == repo.provider,
                builds.c.repo == repo.name,
                builds.c.ref == ref,
                builds.c.trigger == "data",
                builds.c.status == "queued",
            )
        ).scalar()
        if waiting is not None:
            outcome, build_id = "joined", int(waiting)
        else:
            spec = BuildSpec(
                provider=repo.provider,
                repo=repo.name,
                ref=ref,
                sha="",  # the worker resolves the branch head on its mirror
                trigger="data",
                commit_message=f"data changed: {event.url}#{event.generation}",
            )
            outcome, build_id = "queued", create_build(conn, spec)
        conn.execute(data_events.update().where(_key(repo, event)).values(build_id=build_id))
    return Taken(repo.name, outcome, build_id)


def take_event(engine: sa.Engine, repos: Iterable[RepoConfig], event: ObjectEvent) -> list[Taken]:
    """Build every repository `event` concerns; [] for an event nothing watches (another
    object under the notification's prefix, or not a new generation). Each repository's
    build commits before the next is looked at; a failure raises, and the caller must not
    acknowledge the message (a retry finds the committed ones duplicates)."""
    if event.event_type != FINALIZE:
        return []
    taken = []
    for repo in watched_objects(repos).get((event.bucket, event.name), []):
        branch = repo.scheduled_branch
        if any(c in branch for c in "*?[]"):
            # `branches` starts with a glob and no `schedule_branch` names one branch: there
            # is no head to build. Said each time, since nothing else would show it.
            log.warning(
                "data: %s changed, but %s has no branch to build (%r is a glob): set "
                "schedule_branch",
                event.url,
                repo.name,
                branch,
            )
            continue
        done = record(engine, repo, event)
        log.info(
            "data: %s generation %d for %s: %s build #%s",
            event.url,
            event.generation,
            repo.name,
            done.outcome,
            done.build_id,
        )
        taken.append(done)
    return taken
