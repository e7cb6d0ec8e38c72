"""BackupSchedule handlers: kopf adapters over :mod:`stronghold_operator.controllers.backup`.

A watch-event handler feeds every event to the kind's scheduler, where one
:class:`~stronghold_operator.controllers.backup.BackupLoop` per schedule runs its passes
(:mod:`stronghold_operator.services.backup`). No finalizer: the Jobs are owned by the
schedule and garbage-collected with it.
"""

from __future__ import annotations

from typing import Any

import kopf

from stronghold_operator.controllers import backup as controller
from stronghold_operator.controllers.common import GROUP, VERSION, services

PLURAL = controller.PLURAL
MEMO_KEY = "backup"


@kopf.on.startup(id="backup-startup")
async def start_schedule(memo: kopf.Memo, **_: Any) -> None:
    """Create the scheduler once per process (every object's memo is a shallow copy)."""
    memo[MEMO_KEY] = controller.new_scheduler()


@kopf.on.cleanup(id="backup-cleanup")
async def stop_schedule(memo: kopf.Memo, **_: Any) -> None:
    """Stop the passes; a pass writes its status before it ends, so nothing is left."""
    schedules = memo.get(MEMO_KEY)
    if schedules is not None:
        await schedules.stop()


@kopf.on.event(GROUP, VERSION, PLURAL, id="backup-track")
async def track(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """Keep the schedule's view of each BackupSchedule current; a change wakes its pass."""
    schedules = memo.get(MEMO_KEY)
    if schedules is None:
        raise kopf.TemporaryError("the backup scheduler is not started yet", delay=1)
    svc = services(memo)
    svc.remember_windows(kwargs)
    controller.track(schedules, svc, event, body)
