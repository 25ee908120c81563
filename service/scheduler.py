"""The scheduler: fires repositories' `schedule` ticks (trainhook/schedules.py) from every
service replica; the `schedule_runs` claim makes exactly one of them queue each tick."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from service.background import BackgroundSender
from trainhook.models import utcnow
from trainhook.schedules import Fired, fire_due
from trainhook.settings import Settings


class Scheduler(BackgroundSender):
    name = "scheduler"
    interval = 20.0  # ticks are whole minutes: each is seen within the minute

    def __init__(
        self,
        settings: Settings,
        engine: sa.Engine,
        notify: Callable[[list[int]], object] | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.engine = engine
        self.notify = notify  # the queue's wake-up for new jobs

    @property
    def enabled(self) -> bool:
        return any(repo.schedule for repo in self.settings.repos)

    def tick(self) -> list[Fired]:
        fired = fire_due(self.engine, self.settings.repos, utcnow())
        if fired and self.notify is not None:
            self.notify([f.build_id for f in fired])
        return fired
