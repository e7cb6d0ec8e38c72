"""MaintenanceWindow handlers: one daemon per window converges covered objects to the clock.

What the window should be doing is :func:`stronghold_operator.logic.window.decide` (pure).
This module only observes (covered objects, the BackupSchedule's status, workloads, HTTP
pages), acts (annotations, the snapshot ConfigMap) and reports (status, Events, metrics).
Every action is idempotent — annotations are set to a value, the backup request value and
the ConfigMap name are deterministic — so a tick repeated after a crash or a failed status
write changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from prometheus_client import Counter, Gauge

from stronghold_operator import conditions as cond
from stronghold_operator.handlers.common import (
    GROUP,
    VERSION,
    Services,
    announce,
    compute_status,
    services,
    track_watch,
)
from stronghold_operator.logic import snapshot as snap
from stronghold_operator.logic import window as win
from stronghold_operator.logic.recurrence import Recurrence, from_spec
from stronghold_operator.metrics import forget_object, per_object, registry
from stronghold_operator.models.base import InvalidSpec, parse
from stronghold_operator.models.common import MAINTENANCE_ANNOTATION, MAINTENANCE_WINDOWS_ANNOTATION
from stronghold_operator.models.health import HttpCheck as ProbeSpec
from stronghold_operator.models.maintenance import (
    BACKUP_NOW_ANNOTATION,
    END_NOW_ANNOTATION,
    PRECHECK_NOW_ANNOTATION,
    HttpCheck,
    MaintenanceWindowSpec,
    holders,
    with_holder,
    without_holder,
)
from stronghold_operator.platforms.executors import OTHER, run_in
from stronghold_operator.platforms.kube import (
    call,
    call_json,
    is_conflict,
    is_not_found,
    patch_status,
)
from stronghold_operator.probes.http import HttpProbe
from stronghold_operator.runtime.periodic import run_passes

PLURAL = "maintenancewindows"
KIND = "MaintenanceWindow"
# The kinds a window covers: plural -> kind.
COVERED = {
    "healthpolicies": "HealthPolicy",
    "scalingpolicies": "ScalingPolicy",
    "backupschedules": "BackupSchedule",
}
BUSY_INTERVAL = 5.0  # seconds between ticks while a window is being handled
IDLE_INTERVAL = 15.0  # otherwise (manual annotations are noticed within this time)
WINDOW_LABEL = f"{GROUP}/maintenance-window"

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


# -- observing --------------------------------------------------------------------------------


@dataclass
class Covered:
    """Every object of the three kinds in the namespace, and which ones the spec selects."""

    items: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # plural -> objects
    selected: dict[str, set[str]] = field(default_factory=dict)  # plural -> names
    missing_kinds: list[str] = field(default_factory=list)

    def selected_items(self, plural: str) -> list[dict[str, Any]]:
        names = self.selected.get(plural, set())
        return [o for o in self.items.get(plural, []) if o["metadata"]["name"] in names]


async def observe(svc: Services, spec: MaintenanceWindowSpec, namespace: str) -> Covered:
    out = Covered()
    for plural, kind in COVERED.items():
        try:
            listed = await call_json(
                svc.kube.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, plural
            )
            items = list(listed.get("items") or [])
        except ApiException as exc:
            if exc.status != 404:
                raise
            items = []  # the kind's CRD is not installed: nothing of it to cover
            out.missing_kinds.append(kind)
        out.items[plural] = items
        sel = spec.targets.for_plural(plural)
        out.selected[plural] = {
            o["metadata"]["name"]
            for o in items
            if sel is not None
            and o["metadata"].get("deletionTimestamp") is None
            and sel.selects(o["metadata"]["name"], o["metadata"].get("labels"))
        }
    return out


async def _set_annotation(
    svc: Services, namespace: str, plural: str, name: str, key: str, update: Any
) -> bool:
    """Set one annotation from its current value (``update(old) -> new or None``)."""
    return await _set_annotations(svc, namespace, plural, name, {key: update})


async def _set_annotations(
    svc: Services, namespace: str, plural: str, name: str, updates: Mapping[str, Any]
) -> bool:
    """Set annotations from their current values (``update(old) -> new or None``), in one
    patch.

    Optimistic concurrency: the patch carries the resourceVersion it was computed from, and
    is recomputed on a conflict, so two windows editing the same list never lose a name.
    Returns False when the object is gone.
    """
    for _ in range(5):
        try:
            obj = await call_json(
                svc.kube.custom.get_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                plural,
                name,
            )
        except ApiException as exc:
            if is_not_found(exc):
                return False
            raise
        meta = obj["metadata"]
        current = meta.get("annotations") or {}
        changes = {}
        for key, update in updates.items():
            new = update(current.get(key))
            if new != current.get(key):
                changes[key] = new
        if not changes:
            return True
        body = {"metadata": {"annotations": changes, "resourceVersion": meta["resourceVersion"]}}
        try:
            await call_json(
                svc.kube.custom.patch_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                plural,
                name,
                body,
            )
            return True
        except ApiException as exc:
            if is_not_found(exc):
                return False
            if not is_conflict(exc):
                raise
    raise kopf.TemporaryError(f"{plural}/{name}: annotation kept conflicting", delay=5)


def _holds(window: str) -> dict[str, Any]:
    return {
        MAINTENANCE_ANNOTATION: lambda v: with_holder(v, window),
        MAINTENANCE_WINDOWS_ANNOTATION: lambda v: with_holder(v, window),
    }


def _releases(window: str) -> dict[str, Any]:
    return {
        MAINTENANCE_ANNOTATION: lambda v: without_holder(v, window),
        MAINTENANCE_WINDOWS_ANNOTATION: lambda v: without_holder(v, window),
    }


@kopf.index(GROUP, VERSION, PLURAL, id="maintenance_windows")
def maintenance_windows(namespace: str | None, name: str | None, **_: Any) -> dict[str, str]:
    """The windows that exist, by namespace (kopf keeps it current and starts no other
    handler before it is complete): what holds an object is judged against it."""
    return {str(namespace): str(name)}


async def sync_freeze(
    svc: Services, window: str, namespace: str, covered: Covered, freeze: bool
) -> tuple[list[str], list[str], list[str]]:
    """Make the maintenance annotation say what it should: (held, newly frozen, released)."""
    held: list[str] = []
    frozen: list[str] = []
    released: list[str] = []
    for plural, items in covered.items.items():
        kind = COVERED[plural]
        for obj in items:
            name = obj["metadata"]["name"]
            value = (obj["metadata"].get("annotations") or {}).get(MAINTENANCE_ANNOTATION)
            has = window in holders(value)
            want = freeze and name in covered.selected.get(plural, set())
            # The windows' own list says the name is a window's (see maintenance_hold).
            if want and not has:
                if await _set_annotations(svc, namespace, plural, name, _holds(window)):
                    frozen.append(f"{kind}/{name}")
            elif has and not want:
                await _set_annotations(svc, namespace, plural, name, _releases(window))
                released.append(f"{kind}/{name}")
            if want:
                held.append(f"{kind}/{name}")
    return sorted(held), frozen, released


async def release_all(svc: Services, window: str, namespace: str) -> list[str]:
    """Remove this window's name from every object of the covered kinds in the namespace."""
    spec_none = Covered()
    for plural in COVERED:
        try:
            listed = await call_json(
                svc.kube.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, plural
            )
        except ApiException as exc:
            if exc.status == 404:
                continue
            raise
        spec_none.items[plural] = list(listed.get("items") or [])
    _, _, released = await sync_freeze(svc, window, namespace, spec_none, freeze=False)
    return released


# -- pre-checks -------------------------------------------------------------------------------


async def take_snapshot(
    svc: Services, namespace: str, covered: Covered, now: datetime
) -> snap.Snapshot:
    """Workloads of the covered ScalingPolicies, plus what covered HealthPolicies measured."""
    parts: list[snap.Snapshot] = []
    workloads: dict[str, snap.WorkloadState] = {}
    for sp in covered.selected_items("scalingpolicies"):
        ref = (sp.get("spec") or {}).get("targetRef") or {}
        kind, name = ref.get("kind"), ref.get("name")
        if kind not in ("Deployment", "StatefulSet") or not name:
            continue  # Compose targets are not snapshotted (no Kubernetes object)
        read = (
            svc.kube.apps.read_namespaced_deployment
            if kind == "Deployment"
            else svc.kube.apps.read_namespaced_stateful_set
        )
        try:
            obj = svc.kube.plain(await call(read, name, namespace))
        except ApiException as exc:
            if not is_not_found(exc):
                raise
            continue  # a missing workload is a difference found by comparison
        labels = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        pods: list[dict[str, Any]] = []
        if labels:
            selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
            listed = await call(
                svc.kube.core.list_namespaced_pod, namespace, label_selector=selector
            )
            pods = [svc.kube.plain(p) for p in listed.items]
        workloads[f"{kind}/{name}"] = snap.workload_state(obj, pods)
    parts.append(snap.Snapshot(now, workloads=workloads))
    for hp in covered.selected_items("healthpolicies"):
        parts.append(snap.from_health_status(hp["metadata"]["name"], hp.get("status") or {}, now))
    return snap.combine(parts, now)


def snapshot_name(window: str, occurrence_id: str) -> str:
    return f"{window}-snapshot-{occurrence_id}"[:253]


async def store_snapshot(
    svc: Services, body: kopf.Body, name: str, key: str, data: snap.Snapshot
) -> None:
    """Create the ConfigMap (owned by the window) or add ``key`` to it; adopt if it exists."""
    namespace = body["metadata"]["namespace"]
    cm: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {WINDOW_LABEL: body["metadata"]["name"]}},
        "data": {key: data.to_json()},
    }
    kopf.adopt(cm, owner=body)
    try:
        await call(svc.kube.core.create_namespaced_config_map, namespace, cm)
    except ApiException as exc:
        if not is_conflict(exc):
            raise
        await call(
            svc.kube.core.patch_namespaced_config_map,
            name,
            namespace,
            {"data": {key: data.to_json()}},
        )


async def read_snapshot(svc: Services, namespace: str, name: str, key: str) -> snap.Snapshot | None:
    try:
        cm = await call(svc.kube.core.read_namespaced_config_map, name, namespace)
    except ApiException as exc:
        if is_not_found(exc):
            return None
        raise
    text = (cm.data or {}).get(key)
    return snap.Snapshot.from_json(text) if text else None


@dataclass
class Tick:
    """What one pass learnt besides the progress: Events, check results, differences."""

    events: list[win.Event] = field(default_factory=list)
    checks: list[dict[str, Any]] | None = None
    differences: list[dict[str, Any]] | None = None
    snapshot: str | None = None

    def note(self, type_: str, reason: str, message: str) -> None:
        self.events.append(
            win.Event("Warning" if type_ == "Warning" else "Normal", reason, message)
        )


async def run_pre_checks(
    svc: Services,
    body: kopf.Body,
    spec: MaintenanceWindowSpec,
    p: win.Progress,
    covered: Covered,
    now: datetime,
    tick: Tick,
) -> win.Progress:
    """One step of the pre-checks: request the backup, wait for it, snapshot, conclude."""
    namespace, window = body["metadata"]["namespace"], body["metadata"]["name"]
    if p.pre_checks == "Pending":
        p = win.pre_checks_started(p, now)
        tick.note("Normal", "PreChecksStarted", f"pre-checks for window {p.id} started")
    backup = spec.pre_checks.backup
    if backup is not None and p.backup is None:
        if p.backup_request is None:
            value = win.backup_request_value(window, p)
            ok = await _set_annotation(
                svc,
                namespace,
                "backupschedules",
                backup.backup_schedule,
                BACKUP_NOW_ANNOTATION,
                lambda _old: value,
            )
            if not ok:
                msg = f"BackupSchedule {backup.backup_schedule} not found"
                tick.note("Warning", "PreChecksFailed", msg)
                return win.pre_checks_done(p, False, msg)
            tick.note(
                "Normal", "BackupRequested", f"backup-now={value} on {backup.backup_schedule}"
            )
            return replace(
                p,
                backup_request=value,
                backup_requested_at=now,
                pre_checks_message=f"waiting for backup {value} to be verified",
            )
        try:
            bs = await call_json(
                svc.kube.custom.get_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                "backupschedules",
                backup.backup_schedule,
            )
        except ApiException as exc:
            if not is_not_found(exc):
                raise
            msg = f"BackupSchedule {backup.backup_schedule} not found"
            tick.note("Warning", "PreChecksFailed", msg)
            return win.pre_checks_done(p, False, msg)
        bs_status = bs.get("status") or {}
        outcome = win.backup_outcome(
            win.backup_records(bs_status),
            p.backup_request,
            p.backup_requested_at or now,
            now,
            backup.timeout,
            acknowledged=(bs_status.get("onDemand") or {}).get("backup") == p.backup_request,
        )
        if outcome.state == "Waiting":
            return replace(p, pre_checks_message=outcome.message)
        if outcome.state != "Verified":
            tick.note("Warning", "PreChecksFailed", outcome.message)
            return win.pre_checks_done(p, False, outcome.message)
        tick.note("Normal", "BackupVerified", outcome.message)
        p = replace(p, backup=outcome.backup)
    if spec.pre_checks.snapshot and p.snapshot is None:
        data = await take_snapshot(svc, namespace, covered, now)
        name = snapshot_name(window, p.id)
        await store_snapshot(svc, body, name, "before.json", data)
        tick.note("Normal", "SnapshotTaken", f"ConfigMap {name}: {data.summary()}")
        tick.snapshot = name
        p = replace(p, snapshot=name)
    parts = [f"backup {p.backup} verified"] if p.backup else []
    parts += [f"snapshot in ConfigMap {p.snapshot}"] if p.snapshot else []
    msg = "; ".join(parts) or "passed"
    tick.note("Normal", "PreChecksPassed", msg)
    return win.pre_checks_done(p, True, msg)


# -- post-checks ------------------------------------------------------------------------------


_probe: dict[str, HttpProbe] = {}  # one shared client per process, created on first use


async def http_check(check: HttpCheck) -> dict[str, Any]:
    """One post-check page through the HealthPolicy HTTP probe (safe targets, no token)."""
    if "http" not in _probe:
        _probe["http"] = HttpProbe()
    spec = ProbeSpec.model_validate({"url": check.url, "expectedStatus": check.expected_status})
    result = await _probe["http"].probe(spec, timeout_s=check.timeout.total_seconds(), secrets={})
    url = result.urls[0]
    budget_ms = check.latency_budget.total_seconds() * 1000
    entry: dict[str, Any] = {"name": check.name, "type": "Http"}
    if url.status_code is None:
        entry |= {"passed": False, "message": f"{check.url}: {url.message or url.failure}"}
    elif url.status_code not in check.expected_status:
        entry |= {"passed": False, "message": f"{check.url}: HTTP {url.status_code}"}
    elif url.latency_ms is not None and url.latency_ms > budget_ms:
        entry |= {
            "passed": False,
            "message": f"{check.url}: {url.latency_ms:.0f} ms over the {budget_ms:.0f} ms budget",
        }
    else:
        entry |= {"passed": True, "message": f"{check.url}: HTTP {url.status_code}"}
    if url.latency_ms is not None:
        entry["latencyMs"] = round(url.latency_ms, 1)
    return entry


async def run_post_checks(
    svc: Services,
    body: kopf.Body,
    spec: MaintenanceWindowSpec,
    p: win.Progress,
    covered: Covered,
    now: datetime,
    tick: Tick,
) -> win.Progress:
    """One step of the post-checks: wait for health, then HTTP pages and the comparison."""
    namespace = body["metadata"]["namespace"]
    if p.post_checks == "Pending":
        p = win.post_checks_started(p, now)
        tick.note("Normal", "PostChecksStarted", f"post-checks for window {p.id} started")
    released = p.post_checks_started or now
    health = win.health_outcome(
        win.health_readings(covered.selected_items("healthpolicies")),
        released,
        now,
        spec.post_checks.healthy_within,
    )
    if health.state == "Waiting":
        return replace(p, post_checks_message=health.message)
    checks: list[dict[str, Any]] = [
        {
            "name": "HealthPolicies",  # capitalised: never equal to an HTTP check's name
            "type": "Health",
            "passed": health.state == "Passed",
            "message": health.message,
        }
    ]
    checks += await asyncio.gather(*(http_check(c) for c in spec.post_checks.http))
    differences: list[snap.Difference] = []
    if spec.post_checks.compare_snapshot and p.snapshot:
        before = await read_snapshot(svc, namespace, p.snapshot, "before.json")
        if before is None:
            checks.append(
                {
                    "name": "Snapshot",
                    "type": "Compare",
                    "passed": False,
                    "message": f"snapshot ConfigMap {p.snapshot} is missing",
                }
            )
        else:
            after = await take_snapshot(svc, namespace, covered, now)
            await store_snapshot(svc, body, p.snapshot, "after.json", after)
            differences = snap.compare(
                before,
                after,
                spec.post_checks.fail_on,
                spec.post_checks.database_growth_percent,
            )
            failing = [d for d in differences if d.failing]
            checks.append(
                {
                    "name": "Snapshot",
                    "type": "Compare",
                    "passed": not failing,
                    "message": f"{len(differences)} difference(s), {len(failing)} failing",
                }
            )
            for d in differences:
                tick.note("Warning" if d.failing else "Normal", d.kind, d.message)
    tick.checks = checks
    tick.differences = [d.to_status() for d in differences]
    failed = [c for c in checks if not c["passed"]]
    if failed:
        msg = "; ".join(str(c["message"]) for c in failed)[:1000]
        tick.note("Warning", "PostChecksFailed", msg)
        return win.post_checks_done(p, False, msg)
    msg = f"{len(checks)} check(s) passed"
    tick.note("Normal", "PostChecksPassed", msg)
    return win.post_checks_done(p, True, msg)


# -- the loop ---------------------------------------------------------------------------------


@dataclass
class State:
    """What this window's daemon knows; read from status once, then kept in memory.

    The daemon is the only writer of this status, so its memory is never behind it (the
    watch may be, right after a write).
    """

    progress: win.Progress | None
    history: list[win.HistoryEntry]
    handled_end_now: str | None
    handled_precheck_now: str | None
    status: dict[str, Any]
    # The parsed spec and its recurrence (or why it is invalid), for the spec they came from:
    # the overlap check behind from_spec() is worth doing once per change, not every pass.
    compiled: tuple[str, MaintenanceWindowSpec | InvalidSpec, Recurrence | None] | None = None

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> State:
        return cls(
            progress=win.Progress.from_status(status.get("currentWindow")),
            history=win.history_from_status(status.get("history")),
            handled_end_now=status.get("handledEndNow"),
            handled_precheck_now=status.get("handledPrecheckNow"),
            status=dict(status),
        )


async def compile_spec(
    state: State, raw: Mapping[str, Any], now: datetime
) -> tuple[MaintenanceWindowSpec, Recurrence]:
    """Parse the spec and build its recurrence, once per spec; InvalidSpec if unusable."""
    key = json.dumps(raw, sort_keys=True, default=str)
    if state.compiled is None or state.compiled[0] != key:
        try:
            spec = parse(MaintenanceWindowSpec, raw)
            rec = await run_in(OTHER, from_spec, spec, now)
            state.compiled = (key, spec, rec)
        except InvalidSpec as exc:
            state.compiled = (key, exc, None)
    _, parsed, recurrence = state.compiled
    if isinstance(parsed, InvalidSpec) or recurrence is None:
        assert isinstance(parsed, InvalidSpec)
        raise parsed
    return parsed, recurrence


def _emit(body: kopf.Body, events: Sequence[win.Event]) -> None:
    for e in events:
        kopf.event(body, type=e.type, reason=e.reason, message=e.message[:1000])


async def _write(
    svc: Services,
    body: kopf.Body,
    state: State,
    desired: Mapping[str, Any],
    conditions: Sequence[cond.Condition],
    now: datetime,
) -> None:
    meta = body["metadata"]
    # Top-level None stays (it deletes the field); nested None and "" go (see win.clean).
    desired = {k: (v if v is None else win.clean(v)) for k, v in desired.items()}
    delta, moved = compute_status(body, state.status, desired, conditions, now)
    if delta:
        await patch_status(svc.kube, PLURAL, meta["namespace"], meta["name"], delta)
        state.status = cond.merge_patch(state.status, delta)
    announce(body, [t for t in moved if t.type == cond.READY])


async def reconcile_once(svc: Services, body: kopf.Body, state: State, now: datetime) -> float:
    """One pass; returns seconds until the next one."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    if meta.get("deletionTimestamp"):
        # Being deleted: never freeze again; the delete handler releases (this is a backstop).
        await release_all(svc, name, namespace)
        return IDLE_INTERVAL
    if not state.status.get("conditions"):
        await _write(svc, body, state, {}, cond.unknown_all(win.CONDITION_TYPES), now)
    try:
        spec, rec = await compile_spec(state, body.get("spec") or {}, now)
    except InvalidSpec as exc:
        # Nothing can be evaluated: hold nothing (no annotation left behind), say why.
        released = await release_all(svc, name, namespace)
        if released:
            kopf.event(
                body,
                type="Warning",
                reason="Released",
                message=f"spec is invalid; released {', '.join(released)}",
            )
        updates = [cond.Condition(cond.READY, "False", cond.REASON_INVALID_SPEC, str(exc))]
        updates += [
            cond.Condition(t, "Unknown", cond.REASON_INVALID_SPEC, "spec is invalid")
            for t in win.CONDITION_TYPES
            if t != cond.READY
        ]
        await _write(svc, body, state, {"frozenTargets": []}, updates, now)
        ACTIVE_GAUGE.labels(namespace, name).set(0)
        return IDLE_INTERVAL

    annotations = meta.get("annotations") or {}
    end_now = annotations.get(END_NOW_ANNOTATION)
    precheck_now = annotations.get(PRECHECK_NOW_ANNOTATION)
    manual = win.Manual(
        end_now=bool(end_now) and end_now != state.handled_end_now,
        precheck_now=bool(precheck_now) and precheck_now != state.handled_precheck_now,
    )
    handled = {
        "handledEndNow": end_now if manual.end_now else state.handled_end_now,
        "handledPrecheckNow": precheck_now if manual.precheck_now else state.handled_precheck_now,
    }

    covered = await observe(svc, spec, namespace)
    tick = Tick()
    decision: win.Decision | None = None
    held: list[str] = []
    for _ in range(8):  # a few steps may chain within one tick (pre-checks pass -> open)
        decision = await run_in(
            OTHER, win.decide, spec, rec, now, state.progress, state.history, manual, name
        )
        manual = win.Manual()
        _emit(body, decision.events)
        p = decision.progress
        held, frozen, released = await sync_freeze(svc, name, namespace, covered, decision.freeze)
        if frozen:
            tick.note("Normal", "Frozen", f"holding {', '.join(frozen)}")
        if released:
            tick.note("Normal", "Released", f"released {', '.join(released)}")
        if frozen or released:
            covered = await observe(svc, spec, namespace)
        if decision.finished is not None:
            state.history = win.record_history(state.history, decision.finished, spec.history_limit)
            RESULTS.labels(namespace, name, decision.finished.result).inc()
        if decision.run_pre_checks and p is not None:
            p = await run_pre_checks(svc, body, spec, p, covered, now, tick)
        if decision.run_post_checks and p is not None:
            p = await run_post_checks(svc, body, spec, p, covered, now, tick)
        settled = p == state.progress and decision.finished is None
        state.progress = p
        if settled:
            break
    assert decision is not None
    _emit(body, tick.events)

    desired: dict[str, Any] = {
        **handled,
        "nextWindow": win.window_times(decision.next_window, rec.tz)
        if decision.next_window
        else None,
        "currentWindow": state.progress.to_status(rec.tz) if state.progress else None,
        "frozenTargets": held,
        "history": [h.to_status() for h in state.history],
        "lastResult": state.history[0].result if state.history else None,
    }
    snapshot_cm = tick.snapshot or (state.progress.snapshot if state.progress else None)
    if snapshot_cm:
        desired["snapshotConfigMap"] = snapshot_cm
    if tick.checks is not None:
        desired["checks"] = tick.checks
    if tick.differences is not None:
        desired["differences"] = tick.differences
    await _write(svc, body, state, desired, decision.conditions, now)
    state.handled_end_now = handled["handledEndNow"]
    state.handled_precheck_now = handled["handledPrecheckNow"]

    ACTIVE_GAUGE.labels(namespace, name).set(1 if decision.freeze else 0)
    FROZEN.labels(namespace, name).set(len(held))
    if decision.next_window is not None:
        NEXT_START.labels(namespace, name).set(decision.next_window.start.timestamp())
    busy = decision.stage in (win.Stage.PRE_CHECKS, win.Stage.OPEN, win.Stage.POST_CHECKS)
    interval = BUSY_INTERVAL if busy else IDLE_INTERVAL
    if decision.wake_at is not None:
        interval = min(interval, max(0.5, (decision.wake_at - now).total_seconds()))
    return interval


def _forget_metrics(namespace: str, name: str) -> None:
    forget_object(PLURAL, namespace, name)  # every series, the results counter's too


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
    """Converge the window's covered objects to what the clock and the spec say, forever.

    State comes from status once at start (so a restart resumes exactly where the last
    written status left off) and is kept in memory afterwards.
    """
    svc = services(memo)
    state = State.from_status(status)
    meta = body["metadata"]
    uid = svc.follow(body)

    async def one_pass() -> float:
        return await reconcile_once(svc, body, state, cond.utcnow())

    def restart_from_status() -> None:
        # The in-memory state may be ahead of what was written: start again from what
        # status says, as a restart would.
        nonlocal state
        state = State.from_status(body.get("status") or {})

    try:
        await run_passes(
            one_pass,
            stopped,
            logger,
            what="maintenance window",
            retry_after=BUSY_INTERVAL,
            on_error=restart_from_status,
        )
    finally:
        _forget_metrics(meta["namespace"], meta["name"])
        svc.unfollow(uid)


@kopf.on.delete(GROUP, VERSION, PLURAL, id="release")
async def release_on_delete(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Before the window goes (finalizer): remove its name from every object it may hold."""
    svc = services(memo)
    meta = body["metadata"]
    released = await release_all(svc, meta["name"], meta["namespace"])
    if released:
        kopf.event(
            body,
            type="Normal",
            reason="Released",
            message=f"window deleted; released {', '.join(released)}",
        )


@kopf.on.cleanup()
async def close_http(**_: Any) -> None:
    """Close the post-check HTTP client at operator shutdown."""
    probe = _probe.pop("http", None)
    if probe is not None:
        await probe.close()
