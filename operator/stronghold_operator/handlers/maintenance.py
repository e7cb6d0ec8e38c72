"""MaintenanceWindow handlers: kopf adapters over :mod:`stronghold_operator.services.maintenance`.

Each pass of a window's daemon builds the ports (covered objects, workloads, the snapshot
ConfigMap, HTTP pages, the clock), runs the service and writes its typed status through
:func:`stronghold_operator.runtime.status.write_status`; Events and the Prometheus series
are recorded here from the service's result.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import kopf
from prometheus_client import Counter, Gauge

from stronghold_operator import conditions as cond
from stronghold_operator.controllers.common import GROUP, VERSION, Services, services, track_watch
from stronghold_operator.logic import window as win
from stronghold_operator.metrics import forget_object, per_object, registry
from stronghold_operator.models.maintenance import MaintenanceWindowStatus
from stronghold_operator.platforms.executors import OTHER, run_in
from stronghold_operator.platforms.maintenance import (
    AnnotationConflict,
    KubeCovered,
    KubeSnapshots,
    KubeWorkloads,
)
from stronghold_operator.probes.pages import HttpPages
from stronghold_operator.runtime import events as posting
from stronghold_operator.runtime.periodic import run_passes
from stronghold_operator.runtime.status import write_status
from stronghold_operator.services import maintenance as service

PLURAL = "maintenancewindows"
KIND = "MaintenanceWindow"

track_watch(PLURAL)

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

_pages = HttpPages()  # one shared post-check client per process, created on first use


@kopf.index(GROUP, VERSION, PLURAL, id="maintenance_windows")
def maintenance_windows(namespace: str | None, name: str | None, **_: Any) -> dict[str, str]:
    """The windows that exist, by namespace (kopf keeps it current and starts no other
    handler before it is complete): what holds an object is judged against it."""
    return {str(namespace): str(name)}


async def _offload(fn: Callable[..., T], /, *args: Any) -> T:
    return await run_in(OTHER, fn, *args)


def make_ports(svc: Services, body: kopf.Body) -> service.Ports:
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    return service.Ports(
        covered=KubeCovered(svc.kube, ns),
        workloads=KubeWorkloads(svc.kube, ns),
        snapshots=KubeSnapshots(svc.kube, ns, name, lambda cm: kopf.adopt(cm, owner=body)),
        pages=_pages,
        clock=cond.utcnow,
        offload=_offload,
    )


def _emit(body: kopf.Body, events: Sequence[win.Event]) -> None:
    for e in events:
        posting.post(body, type=e.type, reason=e.reason, message=e.message[:1000])


async def _write(
    svc: Services,
    body: kopf.Body,
    state: service.State,
    status: MaintenanceWindowStatus,
    now: datetime,
) -> None:
    # Only Ready's transitions become Events here; the service reports every step itself.
    state.status = await write_status(
        svc.kube, PLURAL, body, status, now, state.status, events_for={cond.READY}
    )


def _record_metrics(namespace: str, name: str, result: service.Pass) -> None:
    for finished in result.results:
        RESULTS.labels(namespace, name, finished).inc()
    ACTIVE_GAUGE.labels(namespace, name).set(1 if result.active else 0)
    if result.held is not None:
        FROZEN.labels(namespace, name).set(result.held)
    if result.next_start is not None:
        NEXT_START.labels(namespace, name).set(result.next_start.timestamp())


async def reconcile_once(svc: Services, body: kopf.Body, state: service.State) -> float:
    """One pass; returns seconds until the next one."""
    meta, ports = body["metadata"], make_ports(svc, body)
    if meta.get("deletionTimestamp"):
        # Being deleted: never freeze again; the delete handler releases (this is a backstop).
        await service.release_all(ports.covered, meta["name"])
        return service.IDLE_INTERVAL
    if not state.status.get("conditions"):
        await _write(svc, body, state, service.initial_status(), cond.utcnow())
    result = await service.reconcile(meta, body.get("spec") or {}, ports, state)
    _emit(body, result.events)
    await _write(svc, body, state, result.status, result.now)
    _record_metrics(meta["namespace"], meta["name"], result)
    return result.interval


@kopf.daemon(
    GROUP,
    VERSION,
    PLURAL,
    id="window",
    cancellation_timeout=10,
    initial_delay=lambda **_: random.uniform(0, 1),
)
async def window_daemon(
    body: kopf.Body,
    status: kopf.Status,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped,
    logger: Any,
    **_: Any,
) -> None:
    """Converge the window's covered objects to the clock and the spec, forever; state comes
    from status once at start (a restart resumes where the written status left off)."""
    svc, meta = services(memo), body["metadata"]
    state = service.State.from_status(status)
    uid = svc.follow(body)

    def restart_from_status() -> None:
        # The in-memory state may be ahead of what was written: start again from status.
        nonlocal state
        state = service.State.from_status(body.get("status") or {})

    try:
        await run_passes(
            lambda: reconcile_once(svc, body, state),
            stopped,
            logger,
            what="maintenance window",
            retry_after=service.BUSY_INTERVAL,
            on_error=restart_from_status,
        )
    finally:
        forget_object(PLURAL, meta["namespace"], meta["name"])  # every series, counters' too
        svc.unfollow(uid)


@kopf.on.delete(GROUP, VERSION, PLURAL, id="release")
async def release_on_delete(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Before the window goes (finalizer): remove its name from every object it may hold."""
    meta = body["metadata"]
    try:
        released = await service.release_all(
            KubeCovered(services(memo).kube, meta["namespace"]), meta["name"]
        )
    except AnnotationConflict as exc:
        raise kopf.TemporaryError(str(exc), delay=5) from exc
    if released:
        message = f"window deleted; released {', '.join(released)}"
        posting.post(body, type="Normal", reason="Released", message=message)


@kopf.on.cleanup()
async def close_http(**_: Any) -> None:
    """Close the post-check HTTP client at operator shutdown."""
    await _pages.close()
