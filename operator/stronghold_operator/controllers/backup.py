"""BackupSchedule controller: one :class:`BackupLoop` per schedule on the kind's scheduler.

A pass builds the ports (platforms/backup.py), runs :func:`services.backup.reconcile`,
sends its Events, records the Prometheus series and writes the typed status through
:func:`stronghold_operator.runtime.status.write_status`. It asks for the next pass in
:data:`BUSY` seconds while Jobs run (nothing watches Jobs), else just after the next slot,
at most :data:`IDLE_MAX` seconds on; a new spec or annotation (an on-demand request, a
maintenance hold) wakes it at once.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any, cast

import kopf
from prometheus_client import Counter, Gauge

from stronghold_operator import conditions as cond
from stronghold_operator.controllers.common import (
    Services,
    feed,
    invalid_conditions,
    maintenance_hold,
    track_watch,
)
from stronghold_operator.logic import backup as lb
from stronghold_operator.logic.backup_results import Finished
from stronghold_operator.metrics import forget_object, per_object, registry
from stronghold_operator.models.backup import (
    ALLOW_PRIVILEGED_ENV,
    BackupScheduleStatus,
    parse_allowance,
)
from stronghold_operator.models.base import InvalidSpec
from stronghold_operator.platforms.backup import (
    KubeBackupJobs,
    KubeBackupPods,
    KubePreflight,
    KubeProgram,
    KubeSources,
)
from stronghold_operator.runtime import events
from stronghold_operator.runtime.scheduler import Scheduler
from stronghold_operator.runtime.status import acknowledge, write_status
from stronghold_operator.services import backup as service

PLURAL = "backupschedules"
BUSY = 10.0  # seconds between passes while a Job runs or is being deleted
IDLE_MAX = 60.0  # the longest wait between passes (BackupStale, a maintenance window gone)
INVALID_RECHECK = 300.0  # an invalid spec is looked at again this often (an edit wakes it)
SLOT_MARGIN = 0.5  # wake this long after a slot, so it is due when the pass looks

track_watch(PLURAL)

_LABELS = ("namespace", "schedule")
LAST_SUCCESS = Gauge(
    "stronghold_backup_last_success_timestamp_seconds",
    "Unix time the last successful backup completed",
    _LABELS,
    registry=registry,
)
LAST_SIZE = Gauge(
    "stronghold_backup_last_size_bytes",
    "Size of the last successful backup archive",
    _LABELS,
    registry=registry,
)
LAST_DURATION = Gauge(
    "stronghold_backup_last_duration_seconds",
    "Duration of the last finished Job, by kind (backup, verify, restore-test)",
    (*_LABELS, "kind"),
    registry=registry,
)
RESULTS = Counter(
    "stronghold_backup_results_total",
    "Finished backup, verify and restore-test Jobs by result",
    (*_LABELS, "kind", "result"),
    registry=registry,
)
# Removed when the schedule is deleted, or no longer listed (metrics.sweep).
per_object(PLURAL, LAST_SUCCESS, LAST_SIZE, LAST_DURATION, RESULTS)


def new_scheduler() -> Scheduler[BackupLoop]:
    # No jitter: a pass planned for just after a slot must not run before it.
    return Scheduler(PLURAL, jitter=0.0, retry_after=BUSY)


def record_metrics(ns: str, name: str, finished: Iterable[Finished]) -> None:
    for f in finished:
        RESULTS.labels(ns, name, f.kind, f.outcome).inc()
        if f.duration is not None:
            LAST_DURATION.labels(ns, name, f.kind).set(f.duration)
        if f.completed is not None:
            LAST_SUCCESS.labels(ns, name).set(f.completed.timestamp())
            LAST_SIZE.labels(ns, name).set(f.size or 0.0)


def next_delay(result: service.Pass) -> float:
    """Soon while Jobs run; otherwise just after the next slot, at most IDLE_MAX away."""
    if result.busy:
        return BUSY
    if result.next_slot is None:
        return IDLE_MAX
    until = (result.next_slot - result.now).total_seconds() + SLOT_MARGIN
    return min(IDLE_MAX, max(1.0, until))


def _signature(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What wakes a pass: the spec (generation) and the annotations (requests, holds)."""
    meta = body.get("metadata") or {}
    return meta.get("generation"), dict(meta.get("annotations") or {})


class BackupLoop:
    """One schedule between passes: its latest body and the status as last written."""

    def __init__(self, svc: Services, body: Mapping[str, Any]) -> None:
        self.svc = svc
        self.body: dict[str, Any] = dict(body)
        self._seen = _signature(body)
        # The status as this loop last wrote it (the watch may not have delivered it yet);
        # None: take the body's, as after a restart.
        self.current: dict[str, Any] | None = None

    def observe(self, body: Mapping[str, Any]) -> bool:
        self.body = dict(body)
        seen, self._seen = self._seen, _signature(body)
        return seen != self._seen

    async def run(self) -> float:
        try:
            return await self._pass()
        except Exception:
            self.current = None  # the next pass starts again from what the API holds
            raise

    def close(self) -> None:
        meta = self.body["metadata"]
        forget_object(PLURAL, meta["namespace"], meta["name"])

    async def settle(self) -> None:
        """Nothing to wait for: a pass writes its status before it ends."""

    @property
    def obj(self) -> kopf.Body:
        return kopf.Body(cast(kopf.RawBody, self.body))

    async def _write(
        self, status: BackupScheduleStatus, current: Mapping[str, Any], body: kopf.Body
    ) -> None:
        # ``body`` is the pass's: its generation is the one the pass evaluated.
        self.current = await write_status(
            self.svc.kube, PLURAL, body, status, cond.utcnow(), current
        )

    async def _pass(self) -> float:
        body = self.obj
        meta = body["metadata"]
        current = self.current if self.current is not None else dict(body.get("status") or {})
        if not current.get("conditions"):
            await self._write(service.initial_status(), current, body)
            current = self.current or {}
        acked = await acknowledge(self.svc.kube, PLURAL, body, current, cond.utcnow())
        if acked is not None:
            current = self.current = acked
        allowed = parse_allowance(os.getenv(ALLOW_PRIVILEGED_ENV, ""))  # set by `stronghold run`
        try:
            compiled = service.compile_spec(body.get("spec") or {}, allowed)
        except InvalidSpec as exc:
            updates = invalid_conditions(str(exc), lb.CONDITION_TYPES)
            await self._write(service.conditions_only(updates), current, body)
            return INVALID_RECHECK
        result = await service.reconcile(compiled, meta, self.ports(), current)
        await self._write(result.status, current, body)
        # Once status holds the results: a refused write repeats the pass, not its Events.
        for e in result.events:
            events.post(body, type=e.type, reason=e.reason, message=e.message)
        record_metrics(meta["namespace"], meta["name"], result.finished)
        return next_delay(result)

    def ports(self) -> service.Ports:
        meta = self.body["metadata"]
        kube, ns = self.svc.kube, meta["namespace"]
        jobs = KubeBackupJobs(kube, ns, meta["name"])
        return service.Ports(
            jobs=jobs,
            pods=KubeBackupPods(jobs),
            program=KubeProgram(kube),
            preflight=KubePreflight(kube, ns),
            sources=KubeSources(kube, ns),
            clock=cond.utcnow,
            # A window gone without release holds no more (read at each pass).
            maintenance=lambda: maintenance_hold(self.svc, self.body["metadata"]),
        )


def track(svc: Services, event: Mapping[str, Any], body: kopf.Body) -> None:
    """Hand one watch event to the kind's schedule and to the stalled-watch check."""
    feed(svc.scheduler(PLURAL, new_scheduler), svc, event, body, lambda: BackupLoop(svc, body))
