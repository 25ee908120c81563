"""What a process that runs the container builder keeps up beside its workers: the stable URL
of every configured repository (worker/container/forward.py), after re-adopting the containers
this home started before a restart (worker/container/release.py, `adopt`)."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field

from trainhook.deployconfig import DeployConfig
from trainhook.releases import Releases
from trainhook.repos import RepoConfig
from trainhook.settings import Settings
from worker.container.engine import Engine, engine_named, resolve
from worker.container.forward import Forwarder
from worker.container.release import Containers, adopt, revive
from worker.local.healthcheck import PROBE_TEXTS

log = logging.getLogger("trainhook.serving")


@dataclass
class Serving:
    """The forwarder and what `adopt` found, for the start-up banner."""

    forwarder: Forwarder
    urls: dict[str, str]  # repository name -> stable URL
    adopted: list[str] = field(default_factory=list)

    def close(self) -> None:
        self.forwarder.close()


def container_engine(settings: Settings) -> Engine | None:
    """The engine the configured builder runs containers with, or None (bundle, cloudbuild)."""
    chosen, _ = resolve(settings.builder)
    return engine_named(chosen) if chosen in ("docker", "podman") else None


def start_serving(settings: Settings) -> Serving | None:
    """Re-adopt this home's containers, then forward each repository's stable URL to the
    release serving it; None when the builder runs no containers."""
    engine = container_engine(settings)
    if engine is None:
        return None
    slugs = [repo.slug for repo in settings.repos]
    try:
        adopted = adopt(Containers(engine), settings.home, slugs)
    except (RuntimeError, OSError) as exc:
        # The engine failing here fails every deploy too, which says so per build; the URLs
        # still forward to whatever serves.
        adopted = [f"re-adopting containers failed: {exc}"]
    for line in adopted:
        log.info("containers: %s", line)
    forwarder = Forwarder(Releases(settings.home, slug) for slug in slugs)
    forwarder.start()
    containers = Containers(engine)
    for repo in settings.repos:
        # In the background: its health check may take up to the deploy timeout, and the
        # service and the other repositories need not wait for it.
        threading.Thread(
            target=_revive, args=(containers, settings, repo), name=f"revive-{repo.slug}",
            daemon=True,
        ).start()  # fmt: skip
    urls = {repo.name: Releases(settings.home, repo.slug).url() for repo in settings.repos}
    return Serving(forwarder, urls, adopted)


def _revive(containers: Containers, settings: Settings, repo: RepoConfig) -> None:
    said = revive(
        containers, Releases(settings.home, repo.slug), repo.deploy or DeployConfig(),
        PROBE_TEXTS, os.environ, lambda line: log.debug("%s: %s", repo.name, line.rstrip()),
    )  # fmt: skip
    if said:
        log.info("containers: %s", said)
