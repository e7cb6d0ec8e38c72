"""MaintenanceWindow handlers: kopf adapters over :mod:`..controllers.maintenance`.

Every window's passes run on the kind's one scheduler (no jitter), fed by the watch-event
handler below. What a window covers comes from kopf's indexes of the three covered kinds,
not from LISTs every pass. The delete handler (a finalizer) releases what the window holds.
"""

from __future__ import annotations

from typing import Any

import kopf

from stronghold_operator.controllers import maintenance as controller
from stronghold_operator.controllers.common import GROUP, VERSION, services, track_watch
from stronghold_operator.logic import indexes

PLURAL = controller.PLURAL

track_watch(PLURAL)


# Index functions are async (they only compute): kopf runs a sync one in a thread for every
# watch event, our own status writes' echoes included (a storm's thousands a minute).
@kopf.index(GROUP, VERSION, PLURAL, id="maintenance_windows")
async def maintenance_windows(namespace: str | None, name: str | None, **_: Any) -> dict[str, str]:
    """The windows that exist, by namespace (kopf keeps it current and starts no other
    handler before it is complete): what holds an object is judged against it."""
    return {str(namespace): str(name)}


@kopf.index(GROUP, VERSION, "healthpolicies", id=controller.COVERED_INDEXES["healthpolicies"])
async def covered_healthpolicies(body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
    """HealthPolicies by namespace, slimmed to what a window selects and holds by."""
    return indexes.covered_entry(body)


@kopf.index(GROUP, VERSION, "scalingpolicies", id=controller.COVERED_INDEXES["scalingpolicies"])
async def covered_scalingpolicies(body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
    """ScalingPolicies by namespace, slimmed to what a window selects, holds and snapshots by."""
    return indexes.covered_entry(body)


@kopf.index(GROUP, VERSION, "backupschedules", id=controller.COVERED_INDEXES["backupschedules"])
async def covered_backupschedules(body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
    """BackupSchedules by namespace, slimmed to what a window selects and holds by."""
    return indexes.covered_entry(body)


@kopf.on.event(GROUP, VERSION, PLURAL, id="track")
async def track(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """Keep the schedule current: a new window converges to the clock and its spec from now
    on; a new spec or a manual annotation wakes it now; a deleted one is forgotten."""
    controller.track(memo, event, body, kwargs)


@kopf.on.delete(GROUP, VERSION, PLURAL, id="release")
async def release_on_delete(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Before the window goes (finalizer): remove its name from every object it may hold."""
    await controller.release(services(memo), body)


@kopf.on.cleanup(id="maintenance-cleanup")
async def close_http(**_: Any) -> None:
    """Close the post-check HTTP client at operator shutdown (after the passes stopped)."""
    await controller.close_pages()
