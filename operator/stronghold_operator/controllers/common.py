"""What every controller shares: typed memo access (Services, with the kinds' schedulers),
feeding a scheduler from watch events, invalid-spec status, holds."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import kopf

from stronghold_operator import conditions as cond
from stronghold_operator.logic.watchdog import WatchTracker
from stronghold_operator.models.base import InvalidSpec
from stronghold_operator.models.common import MAINTENANCE_ANNOTATION, MAINTENANCE_WINDOWS_ANNOTATION
from stronghold_operator.models.maintenance import holding
from stronghold_operator.platforms import fence
from stronghold_operator.platforms.kube import GROUP, VERSION, Kube
from stronghold_operator.runtime.scheduler import Loop, Scheduler
from stronghold_operator.runtime.status import announce, compute_status, is_bad

__all__ = [
    "GROUP",
    "VERSION",
    "Services",
    "announce",
    "compute_status",
    "feed",
    "invalid_conditions",
    "invalid_spec",
    "is_bad",
    "maintenance_hold",
    "services",
    "track_watch",
    "write_status",
]

# Plurals of the kinds whose handler modules are loaded; the watchdog lists these.
WATCHED: list[str] = []


@dataclass
class Services:
    """Clients and state created once at startup (settings.py) and shared through memo."""

    kube: Kube
    watch: WatchTracker = field(default_factory=WatchTracker)
    namespaces: list[str] | None = None  # None: cluster-wide
    # uid -> the live body of every object a daemon or timer serves: kopf replaces its
    # content with each watch event, so its resourceVersion is the last one delivered.
    live: dict[str, kopf.Body] = field(default_factory=dict)
    # uid -> resourceVersion, for kinds whose watch-event handler reports it (HealthPolicy).
    versions: dict[str, str] = field(default_factory=dict)
    # kopf's index of the MaintenanceWindows that exist (namespace -> names), kept current
    # by kopf; None until a handler has been given it.
    windows: Mapping[Any, Any] | None = None
    # Each kind's one scheduler (kind -> Scheduler), created on first use: this object is
    # shared by every object's copy of memo, so there is one per process.
    schedulers: dict[str, Scheduler[Any]] = field(default_factory=dict)

    def scheduler(self, kind: str, make: Callable[[], Scheduler[Any]]) -> Scheduler[Any]:
        """The kind's scheduler (``make`` creates it the first time)."""
        found = self.schedulers.get(kind)
        if found is None:
            found = self.schedulers[kind] = make()
        return found

    async def stop_schedulers(self) -> None:
        """The operator is stopping: no new passes, let the last status writes land."""
        for schedule in self.schedulers.values():
            await schedule.stop()

    def remember_windows(self, kwargs: Mapping[str, Any]) -> None:
        """Keep the window index kopf passes to every handler (``maintenance_windows``)."""
        index = kwargs.get("maintenance_windows")
        if index is not None:
            self.windows = index

    def follow(self, body: kopf.Body) -> str:
        """Let the stalled-watch check read this object's live body; returns its uid."""
        uid = str(body["metadata"]["uid"])
        self.live[uid] = body
        return uid

    def seen(self, uid: str, resource_version: str) -> None:
        """The watch delivered this version of ``uid`` (what :meth:`follow` reads off a body)."""
        self.versions[uid] = resource_version

    def unfollow(self, uid: str) -> None:
        self.live.pop(uid, None)
        self.versions.pop(uid, None)
        self.watch.forget(uid)

    def delivered(self, listed: Mapping[str, str]) -> None:
        """Feed the tracker what the watch delivered; drop objects that are gone."""
        bodies = {u: str(b["metadata"].get("resourceVersion", "")) for u, b in self.live.items()}
        for uid, version in (bodies | self.versions).items():
            if uid not in listed:  # deleted (a timer has no "stopped" to unfollow in)
                self.unfollow(uid)
            else:
                self.watch.observe(uid, version)


def services(memo: kopf.Memo) -> Services:
    svc = memo.get("services")
    if not isinstance(svc, Services):
        raise kopf.TemporaryError("operator services are not initialised yet", delay=5)
    return svc


L = TypeVar("L", bound=Loop)


def feed(
    schedule: Scheduler[L],
    svc: Services,
    event: Mapping[str, Any],
    body: kopf.Body,
    make: Callable[[], L],
) -> L | None:
    """Hand one watch event to the kind's scheduler and to the stalled-watch check.

    A new object gets a loop (``make``); a change its loop cares about wakes its pass now;
    a deleted (or deleting) object is forgotten. Returns the object's loop (None once gone).
    """
    meta = body["metadata"]
    uid = str(meta["uid"])
    loop = schedule.track(uid, body, make, deleted=event.get("type") == "DELETED")
    if loop is None:
        svc.unfollow(uid)
    else:
        svc.seen(uid, str(meta.get("resourceVersion", "")))
    return loop


def track_watch(plural: str) -> None:
    """Include ``plural`` in the stalled-watch check (settings.py's liveness probe).

    Timers call :meth:`Services.follow` with their live body; the kinds fed by a watch-event
    handler (:func:`feed`), which runs for every event anyway, call :meth:`Services.seen`.
    The probe reads the versions from those; no handler runs for this alone.
    """
    WATCHED.append(plural)


def write_status(
    patch: kopf.Patch,
    body: kopf.Body,
    status: Mapping[str, Any],
    desired: Mapping[str, Any],
    updates: Iterable[cond.Condition],
    now: datetime,
) -> list[cond.Transition]:
    """For kopf handlers that return: put the changed fields into kopf's patch, announce."""
    # kopf writes this patch with its own client: the leader fence is checked here instead.
    fence.check("status")
    delta, moved = compute_status(body, status, desired, updates, now)
    for key, value in delta.items():
        patch.status[key] = value
    announce(body, moved)
    return moved


def invalid_spec(
    patch: kopf.Patch,
    body: kopf.Body,
    status: Mapping[str, Any],
    exc: InvalidSpec,
    condition_types: Iterable[str],
    now: datetime,
) -> kopf.PermanentError:
    """Report an unusable spec as Ready=False/InvalidSpec and return the error to raise.

    The caller raises the returned :class:`kopf.PermanentError`, so kopf does not retry;
    the next spec change (a new generation) is evaluated afresh.
    """
    write_status(patch, body, status, {}, invalid_conditions(str(exc), condition_types), now)
    return kopf.PermanentError(str(exc))


def invalid_conditions(message: str, condition_types: Iterable[str]) -> list[cond.Condition]:
    """Ready=False/InvalidSpec with ``message`` (it names the field); the rest Unknown."""
    updates = [cond.Condition(cond.READY, "False", cond.REASON_INVALID_SPEC, message)]
    updates += [
        cond.Condition(t, "Unknown", cond.REASON_INVALID_SPEC, "Spec is invalid")
        for t in condition_types
        if t != cond.READY
    ]
    return updates


def maintenance_hold(svc: Services, meta: Mapping[str, Any]) -> str | None:
    """The windows (and humans) holding the object now; None: not held.

    Names a window placed count only while that window exists (see
    :func:`stronghold_operator.models.maintenance.holding`). Before kopf has given any
    handler the window index, the annotation's word stands.
    """
    annotations = meta.get("annotations") or {}
    value = annotations.get(MAINTENANCE_ANNOTATION) or None
    if svc.windows is None or value is None:
        return value
    existing = {str(n) for n in svc.windows.get(meta.get("namespace"), ())}
    return holding(value, annotations.get(MAINTENANCE_WINDOWS_ANNOTATION), existing)
