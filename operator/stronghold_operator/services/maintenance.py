"""MaintenanceWindow service: observe the covered objects and the clock, decide
(:func:`stronghold_operator.logic.window.decide`, pure), act, return the status.

I/O happens only through the ports below: platforms/maintenance.py implements
:class:`CoveredObjects` (``KubeCovered``), :class:`Workloads` (``KubeWorkloads``) and
:class:`Snapshots` (``KubeSnapshots``), probes/pages.py :class:`Pages` (``HttpPages``); the
handler builds :class:`Ports`. Every action is idempotent — annotations are set to a value,
the backup request value and the ConfigMap name are deterministic — so a pass repeated after
a crash or a failed status write changes nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol, TypeVar

from stronghold_operator import conditions as cond
from stronghold_operator.logic import snapshot as snap
from stronghold_operator.logic import window as win
from stronghold_operator.logic.recurrence import Recurrence, from_spec
from stronghold_operator.models.base import InvalidSpec, parse
from stronghold_operator.models.common import MAINTENANCE_ANNOTATION, MAINTENANCE_WINDOWS_ANNOTATION
from stronghold_operator.models.maintenance import (
    BACKUP_NOW_ANNOTATION,
    END_NOW_ANNOTATION,
    PRECHECK_NOW_ANNOTATION,
    SKIP_ANNOTATION,
    START_NOW_ANNOTATION,
    START_NOW_DURATION_ANNOTATION,
    VOCABULARY,
    HttpCheck,
    MaintenanceWindowSpec,
    MaintenanceWindowStatus,
    holders,
    with_holder,
    without_holder,
)
from stronghold_operator.models.status import Condition

# The kinds a window covers: plural -> kind.
COVERED = {
    "healthpolicies": "HealthPolicy",
    "scalingpolicies": "ScalingPolicy",
    "backupschedules": "BackupSchedule",
}
BUSY_INTERVAL = 5.0  # seconds between passes while a window is being handled
IDLE_INTERVAL = 15.0  # otherwise (a new spec or a manual annotation wakes a pass at once)

Update = Callable[[str | None], str | None]
T = TypeVar("T")

# --- Ports ---------------------------------------------------------------------------------


class CoveredObjects(Protocol):
    """Objects of our kinds in the window's namespace and their annotations.

    ``list`` may answer from an index with each object's metadata (name, labels, the
    maintenance annotations, deletionTimestamp) and a ScalingPolicy's ``spec.targetRef``
    only; ``get`` reads the whole object (status too).
    """

    async def list(self, plural: str) -> list[dict[str, Any]] | None: ...  # None: no CRD
    async def get(self, plural: str, name: str) -> dict[str, Any] | None: ...
    async def set_annotations(
        self, plural: str, name: str, updates: Mapping[str, Update]
    ) -> bool: ...  # False: the object is gone


class Workloads(Protocol):
    """Deployments/StatefulSets (None when missing) and Pods, as plain dicts."""

    async def read(self, kind: str, name: str) -> dict[str, Any] | None: ...
    async def pods(self, match_labels: Mapping[str, str]) -> list[dict[str, Any]]: ...


class Snapshots(Protocol):
    """The window's snapshot ConfigMaps: one JSON document per key."""

    async def store(self, name: str, key: str, text: str) -> None: ...
    async def read(self, name: str, key: str) -> str | None: ...


class Pages(Protocol):
    """Post-check HTTP pages: one status entry (name, type, passed, message, latencyMs)."""

    async def check(self, check: HttpCheck) -> dict[str, Any]: ...


class Offload(Protocol):
    """Runs a CPU-bound pure function (recurrence building, decide) off the event loop."""

    def __call__(self, fn: Callable[..., T], /, *args: Any) -> Awaitable[T]: ...


@dataclass(frozen=True)
class Ports:
    covered: CoveredObjects
    workloads: Workloads
    snapshots: Snapshots
    pages: Pages
    clock: Callable[[], datetime]
    offload: Offload


# --- Observing -----------------------------------------------------------------------------


@dataclass
class Covered:
    """Every object of the three kinds in the namespace, and which ones the spec selects."""

    items: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # plural -> objects
    selected: dict[str, set[str]] = field(default_factory=dict)  # plural -> names
    missing_kinds: list[str] = field(default_factory=list)

    def selected_items(self, plural: str) -> list[dict[str, Any]]:
        names = self.selected.get(plural, set())
        return [o for o in self.items.get(plural, []) if o["metadata"]["name"] in names]


async def observe(objects: CoveredObjects, spec: MaintenanceWindowSpec | None) -> Covered:
    """The covered kinds' objects; with no spec, nothing is selected (release everything)."""
    out = Covered()
    for plural, kind in COVERED.items():
        items = await objects.list(plural)
        if items is None:
            items = []  # the kind's CRD is not installed: nothing of it to cover
            out.missing_kinds.append(kind)
        out.items[plural] = items
        sel = spec.targets.for_plural(plural) if spec is not None else None
        out.selected[plural] = {
            o["metadata"]["name"]
            for o in items
            if sel is not None
            and o["metadata"].get("deletionTimestamp") is None
            and sel.selects(o["metadata"]["name"], o["metadata"].get("labels"))
        }
    return out


# --- Holding and releasing -----------------------------------------------------------------


def _holds(window: str) -> dict[str, Update]:
    return {
        MAINTENANCE_ANNOTATION: lambda v: with_holder(v, window),
        MAINTENANCE_WINDOWS_ANNOTATION: lambda v: with_holder(v, window),
    }


def _releases(window: str) -> dict[str, Update]:
    return {
        MAINTENANCE_ANNOTATION: lambda v: without_holder(v, window),
        MAINTENANCE_WINDOWS_ANNOTATION: lambda v: without_holder(v, window),
    }


async def sync_freeze(
    objects: CoveredObjects, window: str, covered: Covered, freeze: bool
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
                if await objects.set_annotations(plural, name, _holds(window)):
                    frozen.append(f"{kind}/{name}")
                    _apply(obj, _holds(window))
            elif has and not want:
                await objects.set_annotations(plural, name, _releases(window))
                released.append(f"{kind}/{name}")
                _apply(obj, _releases(window))
            if want:
                held.append(f"{kind}/{name}")
    return sorted(held), frozen, released


def _apply(obj: dict[str, Any], updates: Mapping[str, Update]) -> None:
    """What was just written, in the observed copy: the next step of the pass sees it
    without reading the objects again (an index would show it only once the watch has)."""
    current = obj["metadata"].get("annotations") or {}
    new = {key: update(current.get(key)) for key, update in updates.items()}
    kept = {k: v for k, v in current.items() if k not in new}
    obj["metadata"]["annotations"] = kept | {k: v for k, v in new.items() if v is not None}


async def read_selected(
    objects: CoveredObjects, covered: Covered, plural: str
) -> list[dict[str, Any]]:
    """The selected objects of ``plural`` as the API has them now (status included); gone
    ones are left out."""
    names = [o["metadata"]["name"] for o in covered.selected_items(plural)]
    found = await asyncio.gather(*(objects.get(plural, n) for n in names))
    return [o for o in found if o is not None]


async def release_all(objects: CoveredObjects, window: str) -> list[str]:
    """Remove this window's name from every object of the covered kinds in the namespace."""
    _, _, released = await sync_freeze(objects, window, await observe(objects, None), False)
    return released


# --- Pre-checks ----------------------------------------------------------------------------


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


@dataclass(frozen=True)
class Step:
    """What a pre- or post-check step works with."""

    ports: Ports
    window: str
    spec: MaintenanceWindowSpec
    covered: Covered
    now: datetime
    tick: Tick


async def take_snapshot(ports: Ports, covered: Covered, now: datetime) -> snap.Snapshot:
    """Workloads of the covered ScalingPolicies, plus what covered HealthPolicies measured."""
    parts: list[snap.Snapshot] = []
    workloads: dict[str, snap.WorkloadState] = {}
    for sp in covered.selected_items("scalingpolicies"):
        ref = (sp.get("spec") or {}).get("targetRef") or {}
        kind, name = ref.get("kind"), ref.get("name")
        if kind not in ("Deployment", "StatefulSet") or not name:
            continue  # Compose targets are not snapshotted (no Kubernetes object)
        obj = await ports.workloads.read(kind, name)
        if obj is None:
            continue  # a missing workload is a difference found by comparison
        labels = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        pods = await ports.workloads.pods(labels) if labels else []
        workloads[f"{kind}/{name}"] = snap.workload_state(obj, pods)
    parts.append(snap.Snapshot(now, workloads=workloads))
    for hp in await read_selected(ports.covered, covered, "healthpolicies"):
        parts.append(snap.from_health_status(hp["metadata"]["name"], hp.get("status") or {}, now))
    return snap.combine(parts, now)


def snapshot_name(window: str, occurrence_id: str) -> str:
    return f"{window}-snapshot-{occurrence_id}"[:253]


async def _request_backup(s: Step, p: win.Progress, schedule: str) -> win.Progress:
    """Ask the BackupSchedule for one on-demand backup (a deterministic value)."""
    value = win.backup_request_value(s.window, p)
    ok = await s.ports.covered.set_annotations(
        "backupschedules", schedule, {BACKUP_NOW_ANNOTATION: lambda _old: value}
    )
    if not ok:
        msg = f"BackupSchedule {schedule} not found"
        s.tick.note("Warning", "PreChecksFailed", msg)
        return win.pre_checks_done(p, False, msg)
    s.tick.note("Normal", "BackupRequested", f"backup-now={value} on {schedule}")
    return replace(
        p,
        backup_request=value,
        backup_requested_at=s.now,
        pre_checks_message=f"waiting for backup {value} to be verified",
    )


async def _await_backup(s: Step, p: win.Progress, schedule: str) -> win.Progress:
    """Whether the requested backup is verified yet; ``p.backup`` set when it is."""
    backup = s.spec.pre_checks.backup
    assert backup is not None and p.backup_request is not None
    bs = await s.ports.covered.get("backupschedules", schedule)
    if bs is None:
        msg = f"BackupSchedule {schedule} not found"
        s.tick.note("Warning", "PreChecksFailed", msg)
        return win.pre_checks_done(p, False, msg)
    bs_status = bs.get("status") or {}
    outcome = win.backup_outcome(
        win.backup_records(bs_status),
        p.backup_request,
        p.backup_requested_at or s.now,
        s.now,
        backup.timeout,
        acknowledged=(bs_status.get("onDemand") or {}).get("backup") == p.backup_request,
    )
    if outcome.state == "Waiting":
        return replace(p, pre_checks_message=outcome.message)
    if outcome.state != "Verified":
        s.tick.note("Warning", "PreChecksFailed", outcome.message)
        return win.pre_checks_done(p, False, outcome.message)
    s.tick.note("Normal", "BackupVerified", outcome.message)
    return replace(p, backup=outcome.backup)


async def run_pre_checks(s: Step, p: win.Progress) -> win.Progress:
    """One step of the pre-checks: request the backup, wait for it, snapshot, conclude."""
    if p.pre_checks == "Pending":
        p = win.pre_checks_started(p, s.now)
        s.tick.note("Normal", "PreChecksStarted", f"pre-checks for window {p.id} started")
    backup = s.spec.pre_checks.backup
    if backup is not None and p.backup is None:
        if p.backup_request is None:
            return await _request_backup(s, p, backup.backup_schedule)
        p = await _await_backup(s, p, backup.backup_schedule)
        if p.backup is None:
            return p  # waiting, or failed
    if s.spec.pre_checks.snapshot and p.snapshot is None:
        data = await take_snapshot(s.ports, s.covered, s.now)
        name = snapshot_name(s.window, p.id)
        await s.ports.snapshots.store(name, "before.json", data.to_json())
        s.tick.note("Normal", "SnapshotTaken", f"ConfigMap {name}: {data.summary()}")
        s.tick.snapshot = name
        p = replace(p, snapshot=name)
    parts = [f"backup {p.backup} verified"] if p.backup else []
    parts += [f"snapshot in ConfigMap {p.snapshot}"] if p.snapshot else []
    msg = "; ".join(parts) or "passed"
    s.tick.note("Normal", "PreChecksPassed", msg)
    return win.pre_checks_done(p, True, msg)


# --- Post-checks ---------------------------------------------------------------------------


async def _compare(s: Step, snapshot: str) -> tuple[dict[str, Any], list[snap.Difference]]:
    """The snapshot check: the state now against the one before the window."""
    text = await s.ports.snapshots.read(snapshot, "before.json")
    before = snap.Snapshot.from_json(text) if text else None
    if before is None:
        message = f"snapshot ConfigMap {snapshot} is missing"
        return {"name": "Snapshot", "type": "Compare", "passed": False, "message": message}, []
    after = await take_snapshot(s.ports, s.covered, s.now)
    await s.ports.snapshots.store(snapshot, "after.json", after.to_json())
    post = s.spec.post_checks
    differences = snap.compare(before, after, post.fail_on, post.database_growth_percent)
    failing = [d for d in differences if d.failing]
    for d in differences:
        s.tick.note("Warning" if d.failing else "Normal", d.kind, d.message)
    message = f"{len(differences)} difference(s), {len(failing)} failing"
    return {"name": "Snapshot", "type": "Compare", "passed": not failing, "message": message}, (
        differences
    )


async def run_post_checks(s: Step, p: win.Progress) -> win.Progress:
    """One step of the post-checks: wait for health, then HTTP pages and the comparison."""
    if p.post_checks == "Pending":
        p = win.post_checks_started(p, s.now)
        s.tick.note("Normal", "PostChecksStarted", f"post-checks for window {p.id} started")
    health = win.health_outcome(
        win.health_readings(await read_selected(s.ports.covered, s.covered, "healthpolicies")),
        p.post_checks_started or s.now,
        s.now,
        s.spec.post_checks.healthy_within,
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
    checks += await asyncio.gather(*(s.ports.pages.check(c) for c in s.spec.post_checks.http))
    differences: list[snap.Difference] = []
    if s.spec.post_checks.compare_snapshot and p.snapshot:
        compared, differences = await _compare(s, p.snapshot)
        checks.append(compared)
    s.tick.checks = checks
    s.tick.differences = [d.to_status() for d in differences]
    failed = [c for c in checks if not c["passed"]]
    if failed:
        msg = "; ".join(str(c["message"]) for c in failed)[:1000]
        s.tick.note("Warning", "PostChecksFailed", msg)
        return win.post_checks_done(p, False, msg)
    msg = f"{len(checks)} check(s) passed"
    s.tick.note("Normal", "PostChecksPassed", msg)
    return win.post_checks_done(p, True, msg)


# --- State and results ---------------------------------------------------------------------


@dataclass
class State:
    """What this window's loop knows; read from status once, then kept in memory.

    The loop is the only writer of this status, so its memory is never behind it (the
    watch may be, right after a write).
    """

    progress: win.Progress | None
    history: list[win.HistoryEntry]
    handled_end_now: str | None
    handled_precheck_now: str | None
    status: dict[str, Any]
    handled_start_now: str | None = None
    handled_skip: str | None = None
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
            handled_start_now=status.get("handledStartNow"),
            handled_skip=status.get("handledSkip"),
        )


@dataclass(frozen=True)
class Pass:
    """One pass's result: the status to write, the Events (in order), what the metrics need
    and the seconds until the next pass."""

    status: MaintenanceWindowStatus
    now: datetime
    interval: float
    events: list[win.Event] = field(default_factory=list)
    results: list[str] = field(default_factory=list)  # of windows that finished
    active: bool = False
    held: int | None = None
    next_start: datetime | None = None


def _typed(conditions: Sequence[cond.Condition]) -> list[Condition]:
    return [
        Condition.model_validate(
            {"type": c.type, "status": c.status, "reason": c.reason, "message": c.message}
        )
        for c in conditions
    ]


def initial_status() -> MaintenanceWindowStatus:
    """Every condition Unknown: the first sight of a window."""
    return MaintenanceWindowStatus(conditions=_typed(cond.unknown_all(VOCABULARY.types)))


def check_spec(raw: Mapping[str, Any], now: datetime) -> tuple[MaintenanceWindowSpec, Recurrence]:
    """The spec and its recurrence; :class:`InvalidSpec` naming the field if unusable.

    The one check both a pass and the admission webhook (services/admission.py) run.
    """
    spec = parse(MaintenanceWindowSpec, raw)
    return spec, from_spec(spec, now)


async def compile_spec(
    state: State, raw: Mapping[str, Any], now: datetime, offload: Offload
) -> tuple[MaintenanceWindowSpec, Recurrence]:
    """Parse the spec and build its recurrence, once per spec; InvalidSpec if unusable."""
    key = json.dumps(raw, sort_keys=True, default=str)
    if state.compiled is None or state.compiled[0] != key:
        try:
            spec, rec = await offload(check_spec, raw, now)
            state.compiled = (key, spec, rec)
        except InvalidSpec as exc:
            state.compiled = (key, exc, None)
    _, parsed, recurrence = state.compiled
    if isinstance(parsed, InvalidSpec) or recurrence is None:
        assert isinstance(parsed, InvalidSpec)
        raise parsed
    return parsed, recurrence


async def _invalid(ports: Ports, window: str, exc: InvalidSpec, now: datetime) -> Pass:
    """Nothing can be evaluated: hold nothing (no annotation left behind), say why."""
    released = await release_all(ports.covered, window)
    events = []
    if released:
        message = f"spec is invalid; released {', '.join(released)}"
        events.append(win.Event("Warning", "Released", message))
    c = VOCABULARY.condition
    conditions = [c(cond.READY, "False", cond.REASON_INVALID_SPEC, str(exc))]
    conditions += [
        c(t, "Unknown", cond.REASON_INVALID_SPEC, "spec is invalid")
        for t in VOCABULARY.types
        if t != cond.READY
    ]
    status = MaintenanceWindowStatus(conditions=conditions, frozen_targets=[])
    return Pass(status, now, IDLE_INTERVAL, events)


# --- The pass ------------------------------------------------------------------------------


@dataclass
class _Run:
    """The steps of one pass so far."""

    decision: win.Decision | None = None
    held: list[str] = field(default_factory=list)
    events: list[win.Event] = field(default_factory=list)  # the decisions', in order
    results: list[str] = field(default_factory=list)


async def _step(
    s: Step, state: State, rec: Recurrence, manual: win.Manual, run: _Run, skip: str | None
) -> bool:
    """One decision and what it asks for; True when nothing moved (the pass is done)."""
    d = await s.ports.offload(
        win.decide, s.spec, rec, s.now, state.progress, state.history, manual, s.window, skip
    )
    run.decision = d
    run.events += d.events
    p = d.progress
    objects = s.ports.covered
    run.held, frozen, released = await sync_freeze(objects, s.window, s.covered, d.freeze)
    if frozen:
        s.tick.note("Normal", "Frozen", f"holding {', '.join(frozen)}")
    if released:
        s.tick.note("Normal", "Released", f"released {', '.join(released)}")
    for finished in (d.skip_finished, d.finished):
        if finished is not None:
            state.history = win.record_history(state.history, finished, s.spec.history_limit)
            run.results.append(finished.result)
    if d.run_pre_checks and p is not None:
        p = await run_pre_checks(s, p)
    if d.run_post_checks and p is not None:
        p = await run_post_checks(s, p)
    settled = p == state.progress and d.finished is None and d.skip_finished is None
    state.progress = p
    return settled


def _manual(meta: Mapping[str, Any], state: State) -> win.Manual:
    """The manual annotations not handled yet; ``state`` takes the handled values (written
    with this pass's status)."""
    annotations = meta.get("annotations") or {}
    end_now = annotations.get(END_NOW_ANNOTATION)
    precheck_now = annotations.get(PRECHECK_NOW_ANNOTATION)
    start_now = annotations.get(START_NOW_ANNOTATION)
    skip = annotations.get(SKIP_ANNOTATION)
    manual = win.Manual(
        end_now=bool(end_now) and end_now != state.handled_end_now,
        precheck_now=bool(precheck_now) and precheck_now != state.handled_precheck_now,
        start_now=(
            win.StartNow(start_now, annotations.get(START_NOW_DURATION_ANNOTATION))
            if start_now and start_now != state.handled_start_now
            else None
        ),
        skip=bool(skip) and skip != state.handled_skip,
    )
    state.handled_end_now = end_now if manual.end_now else state.handled_end_now
    state.handled_precheck_now = precheck_now if manual.precheck_now else state.handled_precheck_now
    state.handled_start_now = start_now if manual.start_now else state.handled_start_now
    state.handled_skip = skip if manual.skip else state.handled_skip
    return manual


async def reconcile(
    meta: Mapping[str, Any], raw_spec: Mapping[str, Any], ports: Ports, state: State
) -> Pass:
    """One pass: observe, decide, act until settled; the status and the next interval."""
    now, window = ports.clock(), str(meta["name"])
    try:
        spec, rec = await compile_spec(state, raw_spec, now, ports.offload)
    except InvalidSpec as exc:
        return await _invalid(ports, window, exc, now)
    manual = _manual(meta, state)
    skip = (meta.get("annotations") or {}).get(SKIP_ANNOTATION)
    step = Step(ports, window, spec, await observe(ports.covered, spec), now, Tick())
    run = _Run()
    for _ in range(8):  # a few steps may chain within one pass (pre-checks pass -> open)
        settled = await _step(step, state, rec, manual, run, skip)
        manual = win.Manual()
        if settled:
            break
    assert run.decision is not None
    return Pass(
        status=desired_status(state, rec, run, step.tick),
        now=now,
        interval=_interval(run.decision, now),
        events=run.events + step.tick.events,
        results=run.results,
        active=run.decision.freeze,
        held=len(run.held),
        next_start=run.decision.next_window.start if run.decision.next_window else None,
    )


def _interval(d: win.Decision, now: datetime) -> float:
    busy = d.stage in (win.Stage.PRE_CHECKS, win.Stage.OPEN, win.Stage.POST_CHECKS)
    interval = BUSY_INTERVAL if busy else IDLE_INTERVAL
    if d.wake_at is not None:
        interval = min(interval, max(0.5, (d.wake_at - now).total_seconds()))
    return interval


def desired_status(state: State, rec: Recurrence, run: _Run, tick: Tick) -> MaintenanceWindowStatus:
    """The status after a pass (None fields are deleted, unset ones left alone)."""
    d = run.decision
    assert d is not None
    p = state.progress
    fields: dict[str, Any] = {
        "handledEndNow": state.handled_end_now,
        "handledPrecheckNow": state.handled_precheck_now,
        "handledStartNow": state.handled_start_now,
        "handledSkip": state.handled_skip,
        "skipping": (
            {"id": d.skipping.id, **win.window_times(d.skipping, rec.tz)} if d.skipping else None
        ),
        "nextWindow": win.window_times(d.next_window, rec.tz) if d.next_window else None,
        "currentWindow": p.to_status(rec.tz) if p else None,
        "frozenTargets": run.held,
        "history": [h.to_status() for h in state.history],
        "lastResult": state.history[0].result if state.history else None,
        "conditions": _typed(d.conditions),
    }
    snapshot_cm = tick.snapshot or (p.snapshot if p else None)
    if snapshot_cm:
        fields["snapshotConfigMap"] = snapshot_cm
    if tick.checks is not None:
        fields["checks"] = tick.checks
    if tick.differences is not None:
        fields["differences"] = tick.differences
    return MaintenanceWindowStatus.model_validate(fields)
