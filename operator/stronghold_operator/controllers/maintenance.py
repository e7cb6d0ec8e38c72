"""MaintenanceWindow controller: one :class:`WindowLoop` per window on the kind's scheduler.

A pass builds the ports (covered objects from kopf's indexes, workloads, the snapshot
ConfigMap, HTTP pages, the clock), runs :func:`services.maintenance.reconcile` and writes its
typed status through :func:`runtime.status.write_status`; Events and the Prometheus series
are recorded here from the service's result. The scheduler runs without jitter: a pass asks
for the exact second a window starts, and gets it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar, cast

import kopf
from prometheus_client import Counter, Gauge

from stronghold_operator import conditions as cond
from stronghold_operator.controllers.common import Services, feed, services
from stronghold_operator.logic import window as win
from stronghold_operator.metrics import forget_object, per_object, registry
from stronghold_operator.models.maintenance import (
    END_NOW_ANNOTATION,
    PRECHECK_NOW_ANNOTATION,
    SKIP_ANNOTATION,
    START_NOW_ANNOTATION,
    MaintenanceWindowStatus,
)
from stronghold_operator.platforms.executors import OTHER, run_in
from stronghold_operator.platforms.indexes import IndexedCovered
from stronghold_operator.platforms.maintenance import (
    AnnotationConflict,
    KubeCovered,
    KubeSnapshots,
    KubeWorkloads,
)
from stronghold_operator.probes.pages import HttpPages
from stronghold_operator.runtime import events as posting
from stronghold_operator.runtime.scheduler import Scheduler
from stronghold_operator.runtime.status import acknowledge, write_status
from stronghold_operator.services import maintenance as service

PLURAL = "maintenancewindows"
# The kopf index ids of the covered kinds (handlers/maintenance.py), as handler kwargs.
COVERED_INDEXES = {plural: f"covered_{plural}" for plural in service.COVERED}

ACTIVE_GAUGE = Gauge(
    "stronghold_maintenance_active",
    "1 while a MaintenanceWindow holds its covered objects frozen",
    ["namespace", "window"],
    registry=registry,
)
NEXT_START = Gauge(
    "stronghold_maintenance_next_start_timestamp_seconds",
    "Start of the next window (Unix time)",
    ["namespace", "window"],
    registry=registry,
)
RESULTS = Counter(
    "stronghold_maintenance_windows_total",
    "Finished maintenance windows by result",
    ["namespace", "window", "result"],
    registry=registry,
)
FROZEN = Gauge(
    "stronghold_maintenance_frozen_targets",
    "Objects a window holds frozen now",
    ["namespace", "window"],
    registry=registry,
)
per_object(PLURAL, ACTIVE_GAUGE, NEXT_START, RESULTS, FROZEN)

T = TypeVar("T")

# The scheduler counts a pass's delay from just before the pass read the clock: without this
# a window woken for its start could wake a moment early, and then pass again 0.5 s later.
WAKE_MARGIN_S = 0.05

_pages = HttpPages()  # one shared post-check client per process, created on first use


async def _offload(fn: Callable[..., T], /, *args: Any) -> T:
    return await run_in(OTHER, fn, *args)


def _emit(body: kopf.Body, events: Sequence[win.Event]) -> None:
    for e in events:
        posting.post(body, type=e.type, reason=e.reason, message=e.message[:1000])


def _record_metrics(namespace: str, name: str, result: service.Pass) -> None:
    for finished in result.results:
        RESULTS.labels(namespace, name, finished).inc()
    ACTIVE_GAUGE.labels(namespace, name).set(1 if result.active else 0)
    if result.held is not None:
        FROZEN.labels(namespace, name).set(result.held)
    if result.next_start is not None:
        NEXT_START.labels(namespace, name).set(result.next_start.timestamp())


def _wakes(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What in an event deserves a pass now: a new spec or a manual annotation (end-now,
    precheck-now, start-now, skip). Not our own status writes (they would loop) nor kopf's
    bookkeeping."""
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return (
        meta.get("generation"),
        annotations.get(END_NOW_ANNOTATION),
        annotations.get(PRECHECK_NOW_ANNOTATION),
        annotations.get(START_NOW_ANNOTATION),
        annotations.get(SKIP_ANNOTATION),
    )


class WindowLoop:
    """One MaintenanceWindow between passes (a :class:`runtime.scheduler.Loop`): the latest
    body the watch delivered and the window's state, read from status at first sight (a
    restart resumes where the written status left off) and again after a failed pass."""

    def __init__(self, svc: Services, body: kopf.Body, covered: Mapping[str, Any]) -> None:
        self.svc = svc
        self.body = body
        self.covered = covered  # plural -> kopf's index of that kind
        self.state = service.State.from_status(body.get("status") or {})
        self._wake_key = _wakes(body)

    def observe(self, body: Mapping[str, Any]) -> bool:
        self.body = cast(kopf.Body, body)  # feed() hands on kopf's body of the event
        key, self._wake_key = self._wake_key, _wakes(body)
        return key != self._wake_key

    async def run(self) -> float:
        try:
            return await self.reconcile_once() + WAKE_MARGIN_S
        except Exception:
            self.restart_from_status()
            raise  # the scheduler logs it and retries in BUSY_INTERVAL

    def restart_from_status(self) -> None:
        # The in-memory state may be ahead of what was written: start again from status.
        self.state = service.State.from_status(self.body.get("status") or {})

    def close(self) -> None:
        meta = self.body["metadata"]
        forget_object(PLURAL, meta["namespace"], meta["name"])  # every series, counters' too

    async def settle(self) -> None:
        return None  # status writes are awaited within the pass

    def ports(self) -> service.Ports:
        body, kube = self.body, self.svc.kube
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        return service.Ports(
            covered=IndexedCovered(kube, ns, self.covered),
            workloads=KubeWorkloads(kube, ns),
            snapshots=KubeSnapshots(kube, ns, name, lambda cm: kopf.adopt(cm, owner=body)),
            pages=_pages,
            clock=cond.utcnow,
            offload=_offload,
        )

    async def write(
        self, status: MaintenanceWindowStatus, now: datetime, body: kopf.Body | None = None
    ) -> None:
        # Only Ready's transitions become Events here; the service reports every step itself.
        # ``body``: the pass's, whose generation the pass evaluated.
        self.state.status = await write_status(
            self.svc.kube,
            PLURAL,
            self.body if body is None else body,
            status,
            now,
            self.state.status,
            events_for={cond.READY},
        )

    async def reconcile_once(self) -> float:
        """One pass; returns seconds until the next one."""
        body = self.body
        meta = body["metadata"]
        if not self.state.status.get("conditions"):
            await self.write(service.initial_status(), cond.utcnow(), body)
        acked = await acknowledge(self.svc.kube, PLURAL, body, self.state.status, cond.utcnow())
        if acked is not None:
            self.state.status = acked
        result = await service.reconcile(meta, body.get("spec") or {}, self.ports(), self.state)
        _emit(body, result.events)
        await self.write(result.status, result.now, body)
        _record_metrics(meta["namespace"], meta["name"], result)
        return result.interval


async def release(svc: Services, body: kopf.Body) -> None:
    """The window is being deleted: remove its name from every object it may hold (a LIST
    of each covered kind, not the index: nothing may be left behind)."""
    meta = body["metadata"]
    try:
        released = await service.release_all(KubeCovered(svc.kube, meta["namespace"]), meta["name"])
    except AnnotationConflict as exc:
        raise kopf.TemporaryError(str(exc), delay=5) from exc
    if released:
        message = f"window deleted; released {', '.join(released)}"
        posting.post(body, type="Normal", reason="Released", message=message)


def new_scheduler() -> Scheduler[WindowLoop]:
    """The kind's one scheduler (kept in :class:`Services`, stopped at operator cleanup);
    no jitter: a window wakes at its start."""
    return Scheduler[WindowLoop]("MaintenanceWindow", jitter=0.0, retry_after=service.BUSY_INTERVAL)


async def close_pages() -> None:
    """The operator is stopping: close the shared post-check client."""
    await _pages.close()


def track(
    memo: kopf.Memo, event: Mapping[str, Any], body: kopf.Body, indexes: Mapping[str, Any]
) -> None:
    """One watch event of a window: a new window gets its loop, a change wakes it."""
    svc = services(memo)
    svc.remember_windows(indexes)
    covered = {plural: indexes.get(index) for plural, index in COVERED_INDEXES.items()}
    schedule = svc.scheduler("MaintenanceWindow", new_scheduler)
    feed(schedule, svc, event, body, lambda: WindowLoop(svc, body, covered))
