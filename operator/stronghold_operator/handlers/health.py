"""HealthPolicy handlers: a watch-event handler feeds the kind's one schedule; startup and
cleanup create and stop the process-wide runtime.

Rounds, their status and notifications are the controller's
(:mod:`stronghold_operator.controllers.health`, which also says why there is no kopf daemon
or change handler for this kind); a round is :mod:`stronghold_operator.services.health`.
"""

from __future__ import annotations

from typing import Any

import kopf

from stronghold_operator.controllers import health as controller
from stronghold_operator.controllers.common import GROUP, VERSION

PLURAL = controller.PLURAL


@kopf.on.startup(id="health-startup")
async def start_probes(memo: kopf.Memo, **_: Any) -> None:
    """Create the probes once per process, before any policy is seen (kopf gives every
    object a shallow copy of memo: created later, they would be per policy)."""
    controller.runtime(memo)


@kopf.on.cleanup(id="health-cleanup")
async def close_probes(memo: kopf.Memo, **_: Any) -> None:
    """Stop the schedule, let the last status writes land, close the shared clients."""
    await controller.stop(memo)


@kopf.on.event(GROUP, VERSION, PLURAL, id="track")
async def track(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """Keep the schedule's view of each policy current; a change wakes its round now.

    Not a daemon nor a change handler per policy: see controllers/health.py for why.
    """
    controller.track(memo, event, body, kwargs)
