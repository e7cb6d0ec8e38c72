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


@kopf.on.event(GROUP, VERSION, PLURAL, id="backup-track")
async def track(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """Keep the schedule's view of each BackupSchedule current; a change wakes its pass."""
    svc = services(memo)
    svc.remember_windows(kwargs)
    controller.track(svc, event, body)
