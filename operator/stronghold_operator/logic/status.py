"""``stronghold status``: the four kinds' objects as one screen per namespace.

Pure functions of the API objects (``kubectl get ... -o json`` items) and ``now``: each object
becomes a :class:`Row` with a level (Critical, Warning, Unknown, Active, OK), a one-word
state, the problems behind the level, the JSON fields of ``-o json`` and the table's cells.
Problems first: rows and namespaces are ordered by their worst level. The command's exit code
is 0 when nothing is a problem, 1 otherwise (2, an error, is the caller's).

Staleness is judged here, not only read from status: a backup with no verified archive younger
than ``spec.staleAfter`` is stale whatever the operator last wrote, and a status the operator
should have refreshed long ago (a HealthPolicy's ``lastProbeTime``, a BackupSchedule's
``nextScheduleTime`` long past) says the operator may not be running.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from stronghold_operator import conditions as cond
from stronghold_operator.logic import backup as backup_logic
from stronghold_operator.logic.health import format_latency
from stronghold_operator.models.base import parse_duration

Level = Literal["Critical", "Warning", "Unknown", "Active", "OK"]
# Sort order, worst first; the first three are problems (exit code 1).
LEVELS: tuple[Level, ...] = ("Critical", "Warning", "Unknown", "Active", "OK")
PROBLEM_LEVELS: frozenset[str] = frozenset({"Critical", "Warning", "Unknown"})
EXIT_OK, EXIT_PROBLEMS, EXIT_ERROR = 0, 1, 2

KINDS: tuple[str, ...] = ("HealthPolicy", "BackupSchedule", "ScalingPolicy", "MaintenanceWindow")
# JSON keys of each kind's list in a namespace of the report.
KIND_KEYS = {
    "HealthPolicy": "healthPolicies",
    "BackupSchedule": "backupSchedules",
    "ScalingPolicy": "scalingPolicies",
    "MaintenanceWindow": "maintenanceWindows",
}
# Table columns after NAME and STATE, per kind (Row.cells, in this order).
COLUMNS = {
    "HealthPolicy": ("SEVERITY", "INCIDENT", "WORST LATENCY", "LAST PROBE"),
    "BackupSchedule": ("LAST BACKUP", "LAST VERIFIED", "RESTORE TEST", "NEXT RUN"),
    "ScalingPolicy": ("TARGET", "REPLICAS", "LAST DECISION"),
    "MaintenanceWindow": ("WINDOW", "LAST RESULT"),
}

# controllers/health.py PROBE_TIME_REFRESH_S: a healthy policy's lastProbeTime is written at
# least this often; older than this plus a few intervals, the operator is not probing.
PROBE_TIME_REFRESH = timedelta(minutes=30)
STATUS_GRACE = timedelta(minutes=5)
DEFAULT_INTERVAL = timedelta(seconds=30)
DEFAULT_STALE_AFTER = timedelta(hours=26)  # models/backup.py BackupScheduleSpec.stale_after
SEVERITY_LEVEL: dict[str, Level] = {"P1": "Critical", "P2": "Critical", "P3": "Warning"}


@dataclass(frozen=True)
class Row:
    """One object on the screen."""

    kind: str
    namespace: str
    name: str
    level: Level
    state: str
    problems: tuple[str, ...]
    fields: Mapping[str, Any]  # the kind's own fields in ``-o json``
    cells: tuple[str, ...]  # COLUMNS[kind], for the table

    @property
    def problem(self) -> bool:
        return self.level in PROBLEM_LEVELS

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "level": self.level,
            "state": self.state,
            "problem": self.problem,
            "problems": list(self.problems),
            **self.fields,
        }


@dataclass(frozen=True)
class Namespace:
    name: str
    rows: tuple[Row, ...]

    @property
    def level(self) -> Level:
        return worst(r.level for r in self.rows)

    @property
    def problems(self) -> int:
        return sum(r.problem for r in self.rows)

    def of(self, kind: str) -> list[Row]:
        return [r for r in self.rows if r.kind == kind]


@dataclass(frozen=True)
class Report:
    now: datetime
    namespaces: tuple[Namespace, ...]
    scope: Mapping[str, Any] = field(default_factory=dict)

    @property
    def problems(self) -> int:
        return sum(n.problems for n in self.namespaces)

    @property
    def objects(self) -> int:
        return sum(len(n.rows) for n in self.namespaces)

    @property
    def exit_code(self) -> int:
        return EXIT_PROBLEMS if self.problems else EXIT_OK

    def to_json(self) -> dict[str, Any]:
        return {
            "apiVersion": "ops.stronghold.io/v1alpha1",
            "kind": "StatusReport",
            "generatedAt": cond.rfc3339(self.now),
            "scope": dict(self.scope),
            "summary": {
                "objects": self.objects,
                "problems": self.problems,
                "exitCode": self.exit_code,
            },
            "namespaces": [
                {
                    "namespace": ns.name,
                    "level": ns.level,
                    "problems": ns.problems,
                    **{KIND_KEYS[k]: [r.to_json() for r in ns.of(k)] for k in KINDS},
                }
                for ns in self.namespaces
            ],
        }


def worst(levels: Iterable[Level]) -> Level:
    return min(levels, key=LEVELS.index, default="OK")


def _order(row: Row) -> tuple[int, int, str]:
    return LEVELS.index(row.level), KINDS.index(row.kind), row.name


def report(
    objects: Mapping[str, Sequence[Mapping[str, Any]]],
    now: datetime,
    *,
    namespaces: Sequence[str] = (),
    scope: Mapping[str, Any] | None = None,
) -> Report:
    """The report of every object (``objects``: kind -> API objects), problems first.

    ``namespaces`` are shown even when they hold nothing (the one the user asked for).
    """
    build = {
        "HealthPolicy": health_row,
        "BackupSchedule": backup_row,
        "ScalingPolicy": scaling_row,
        "MaintenanceWindow": window_row,
    }
    by_ns: dict[str, list[Row]] = {ns: [] for ns in namespaces}
    for kind in KINDS:
        for obj in objects.get(kind, ()):
            row = build[kind](obj, now)
            by_ns.setdefault(row.namespace, []).append(row)
    out = [Namespace(ns, tuple(sorted(rows, key=_order))) for ns, rows in by_ns.items()]
    out.sort(key=lambda n: (LEVELS.index(n.level), n.name))
    return Report(now, tuple(out), scope or {})


# -- helpers ------------------------------------------------------------------------------


def ago(when: datetime | None, now: datetime) -> str:
    """``5m ago`` / ``in 2h`` / ``-``: compact, for the table (JSON keeps the timestamps)."""
    if when is None:
        return "-"
    delta = now - when
    text = span(abs(delta))
    return f"in {text}" if delta.total_seconds() < 0 else f"{text} ago"


def span(d: timedelta) -> str:
    s = int(d.total_seconds())
    if s >= 86400:
        return f"{s // 86400}d{(s % 86400) // 3600}h"
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60}m"
    if s >= 60:
        return f"{s // 60}m"
    return f"{s}s"


def _meta(obj: Mapping[str, Any]) -> tuple[str, str, Mapping[str, Any], Mapping[str, Any]]:
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    spec = obj.get("spec") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or ""), spec, status


def _time(value: Any) -> datetime | None:
    return cond.parse_rfc3339(value) if value else None


def _duration(value: Any, default: timedelta) -> timedelta:
    try:
        return parse_duration(value) if value is not None else default
    except ValueError:
        return default


def _condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    return cond.find(status.get("conditions"), type_) or {}


class _Judge:
    """Collects (level, problem) findings for one row."""

    def __init__(self) -> None:
        self.levels: list[Level] = []
        self.problems: list[str] = []

    def add(self, level: Level, text: str | None = None) -> None:
        self.levels.append(level)
        if text and level in PROBLEM_LEVELS:
            self.problems.append(text)

    @property
    def level(self) -> Level:
        return worst(self.levels)


def _common(obj: Mapping[str, Any], status: Mapping[str, Any], judge: _Judge) -> None:
    """What every kind shares: no status yet, Ready=False, a spec the operator has not seen."""
    meta = obj.get("metadata") or {}
    if not status:
        judge.add("Unknown", "no status yet (is the operator running?)")
        return
    ready = _condition(status, "Ready")
    if ready.get("status") == "False":
        judge.add("Critical", f"Ready=False {ready.get('reason')}: {ready.get('message')}")
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    if meta.get("deletionTimestamp"):
        # Deletion bumps the generation of a custom resource: not a spec to observe.
        judge.add("Warning", f"being deleted since {meta['deletionTimestamp']}")
    elif generation is not None and observed is not None and observed < generation:
        judge.add("Unknown", f"spec generation {generation} not observed yet (at {observed})")


def _state(status: Mapping[str, Any], state: str) -> str:
    """The row's one word: Ready=False's reason (InvalidSpec, TargetNotFound, ...) wins."""
    ready = _condition(status, "Ready")
    if ready.get("status") == "False" and ready.get("reason"):
        return str(ready["reason"])
    return state


# -- HealthPolicy -------------------------------------------------------------------------


def health_row(obj: Mapping[str, Any], now: datetime) -> Row:
    ns, name, spec, status = _meta(obj)
    judge = _Judge()
    _common(obj, status, judge)
    checks = list(status.get("checks") or [])
    states = {str(c.get("state")) for c in checks}
    state = next((s for s in ("Critical", "Warning", "Unknown") if s in states), "Healthy")
    if not checks:
        state = "Unknown"
    if spec.get("suspend"):
        state = "Suspended"
    severity = str(status.get("severity") or "None")
    incident, incident_cell = _incident(status.get("incident") or None, severity, now, judge)
    # An open incident says it all; without one, the checks that are not Healthy do.
    if incident is None and state in ("Critical", "Warning"):
        judge.add("Critical" if state == "Critical" else "Warning", _bad_checks(checks, state))
    elif incident is None and state == "Unknown" and status:
        judge.add("Unknown", _bad_checks(checks, "Unknown") if checks else "not probed yet")
    last_probe = _time(status.get("lastProbeTime"))
    interval = _duration(spec.get("interval"), DEFAULT_INTERVAL)
    due = PROBE_TIME_REFRESH + 3 * interval + STATUS_GRACE
    if last_probe is not None and now - last_probe > due and not spec.get("suspend"):
        judge.add("Warning", f"last probe {ago(last_probe, now)} (is the operator running?)")
    latency_ms = status.get("worstLatencyMs")
    fields = {
        "healthy": _condition(status, "Healthy").get("status", "Unknown"),
        "severity": severity,
        "incident": incident,
        "worstLatency": status.get("worstLatency")
        or (format_latency(latency_ms) if latency_ms is not None else None),
        "worstLatencyMs": latency_ms,
        "lastProbeTime": status.get("lastProbeTime"),
        "checks": [
            {"name": c.get("name"), "state": c.get("state"), "message": c.get("message")}
            for c in checks
        ],
    }
    cells = (
        severity,
        incident_cell,
        str(fields["worstLatency"] or "-"),
        ago(last_probe, now),
    )
    state = _state(status, state)
    return Row("HealthPolicy", ns, name, judge.level, state, tuple(judge.problems), fields, cells)


def _incident(
    raw: Mapping[str, Any] | None, severity: str, now: datetime, judge: _Judge
) -> tuple[dict[str, Any] | None, str]:
    """The open incident's JSON and table cell; its severity judges the row."""
    if not raw:
        return None, "-"
    started = _time(raw.get("startedAt"))
    sev = str(raw.get("severity") or severity)
    expected = bool(raw.get("expected"))
    note = " (expected: maintenance)" if expected else ""
    # Planned work: still open, but no longer the worst news.
    level: Level = "Warning" if expected else SEVERITY_LEVEL.get(sev, "Warning")
    judge.add(level, f"incident {sev} open, root cause {raw.get('rootCause')}{note}")
    incident = {
        "id": raw.get("id"),
        "severity": raw.get("severity"),
        "rootCause": raw.get("rootCause"),
        "summary": raw.get("summary"),
        "startedAt": raw.get("startedAt"),
        "ageSeconds": int((now - started).total_seconds()) if started else None,
        "expected": expected,
    }
    return incident, f"{sev} {raw.get('rootCause')} {ago(started, now)}{note}"


def _bad_checks(checks: Sequence[Mapping[str, Any]], state: str) -> str:
    bad = [f"{c.get('name')}: {c.get('message')}" for c in checks if c.get("state") == state]
    return f"{state}: " + "; ".join(bad)


# -- BackupSchedule -----------------------------------------------------------------------


def backup_row(obj: Mapping[str, Any], now: datetime) -> Row:
    ns, name, spec, status = _meta(obj)
    meta = obj.get("metadata") or {}
    judge = _Judge()
    _common(obj, status, judge)
    suspended = bool(spec.get("suspend"))
    backups = list(status.get("backups") or [])
    newest = backups[0] if backups else None
    last_ok, verified = (
        _time(status.get("lastSuccessfulTime")),
        _time(status.get("lastVerifiedTime")),
    )
    created = _time(meta.get("creationTimestamp")) or now
    stale_after = _duration(spec.get("staleAfter"), DEFAULT_STALE_AFTER)
    judged = backup_logic.stale(verified, created, now, stale_after)
    reported = _condition(status, backup_logic.BACKUP_STALE)
    stale = judged.status == "True" or reported.get("status") == "True"
    state = "OK" if last_ok else "NoBackupYet"
    if stale:
        state = "Stale"
        text = judged.message if judged.status == "True" else str(reported.get("message"))
        judge.add("Critical", f"backup stale: {text}")
    if newest is not None and newest.get("result") == "Failed":
        state = "Failed"
        why = newest.get("reason") or newest.get("message") or "Failed"
        judge.add("Critical", f"last backup {newest.get('name')} failed: {why}")
    restore = status.get("lastRestoreTest") or {}
    _backup_checks(status, restore, suspended, now, judge)
    if status.get("active"):
        state = "Running" if state in ("OK", "NoBackupYet") else state
    if suspended:
        state = "Suspended"
    # No backup yet within staleAfter of creation is a schedule waiting for its first slot,
    # not a problem (the operator's BackupStale says NoBackupYet); past it, it is stale.
    fields = {
        "lastBackup": status.get("lastSuccessfulTime"),
        "lastBackupResult": newest.get("result") if newest else None,
        "lastVerified": status.get("lastVerifiedTime"),
        "lastRestoreTest": restore.get("time"),
        "lastRestoreTestResult": restore.get("result"),
        "nextRun": status.get("nextScheduleTime"),
        "stale": stale,
        "staleAfterSeconds": int(stale_after.total_seconds()),
        "suspended": suspended,
        "running": [str(a.get("name")) for a in status.get("active") or []],
    }
    restore_cell = "-"
    if restore:
        restore_cell = f"{restore.get('result')} {ago(_time(restore.get('time')), now)}"
    cells = (
        ago(last_ok, now),
        ago(verified, now),
        restore_cell,
        "suspended" if suspended else ago(_time(status.get("nextScheduleTime")), now),
    )
    state = _state(status, state)
    return Row("BackupSchedule", ns, name, judge.level, state, tuple(judge.problems), fields, cells)


def _backup_checks(
    status: Mapping[str, Any],
    restore: Mapping[str, Any],
    suspended: bool,
    now: datetime,
    judge: _Judge,
) -> None:
    """The verification, the restore test, and a next run long past (no operator)."""
    verification = status.get("lastVerification") or {}
    if verification.get("result") in ("Failed", "Error"):
        message = verification.get("message")
        judge.add("Warning", f"last verification {verification['result']}: {message}")
    if restore.get("result") == "Failed":
        judge.add("Warning", f"last restore test failed: {restore.get('reason')}")
    next_run = _time(status.get("nextScheduleTime"))
    if next_run is not None and not suspended and now - next_run > STATUS_GRACE * 2:
        judge.add("Warning", f"next run was due {ago(next_run, now)} (is the operator running?)")


# -- ScalingPolicy ------------------------------------------------------------------------

_SCALING_STATES = {
    "Paused": "Paused",
    "DryRun": "DryRun",
    "MaintenanceWindow": "Frozen",
    "MetricsUnavailable": "NoMetrics",
    "ConflictingAutoscaler": "Conflict",
}


def scaling_row(obj: Mapping[str, Any], now: datetime) -> Row:
    ns, name, spec, status = _meta(obj)
    judge = _Judge()
    _common(obj, status, judge)
    active = _condition(status, "ScalingActive")
    limited = _condition(status, "ScalingLimited")
    metrics = _condition(status, "MetricsAvailable")
    decision = status.get("lastDecision") or None
    current, desired = status.get("currentReplicas"), status.get("desiredReplicas")
    lo, hi = spec.get("minReplicas"), spec.get("maxReplicas")
    state = "Steady"
    if decision and decision.get("action") in ("ScaleUp", "ScaleDown") and current != desired:
        state = "Scaling"
    if active.get("status") == "False":
        state = _SCALING_STATES.get(str(active.get("reason")), state)
    at_max = limited.get("status") == "True" and limited.get("reason") == "CappedByMax"
    if at_max:
        state = "AtMax"
        judge.add("Warning", f"at maxReplicas {hi}: the load asks for more")
    broken = _condition(status, "Ready").get("status") == "False"  # Ready says it already
    if metrics.get("status") == "False" and state != "Paused" and not broken:
        judge.add("Warning", f"metrics unavailable: {metrics.get('message')}")
    if state == "Conflict":
        judge.add("Critical", f"another autoscaler: {active.get('message')}")
    if status and not decision and not judge.problems:
        judge.add("Unknown", "no decision yet")
    if state == "Frozen":
        judge.add("Active")
    if not status:
        state = "Unknown"
    fields = {
        "target": status.get("target"),
        "replicas": current,
        "desired": desired,
        "minReplicas": lo,
        "maxReplicas": hi,
        "cpuPercent": status.get("currentCpuUtilizationPercent"),
        "memoryPercent": status.get("currentMemoryUtilizationPercent"),
        "pausedUntil": spec.get("pausedUntil"),
        "lastDecision": dict(decision) if decision else None,
    }
    replicas = f"{_num(current)}/{_num(desired)} [{_num(lo)}-{_num(hi)}]"
    why = "-"
    if decision:
        when = ago(_time(decision.get("time")), now)
        why = f"{decision.get('action')} {decision.get('reason')} {when}: {decision.get('message')}"
    cells = (str(status.get("target") or "-"), replicas, why)
    state = _state(status, state)
    return Row("ScalingPolicy", ns, name, judge.level, state, tuple(judge.problems), fields, cells)


def _num(value: Any) -> str:
    return "-" if value is None else str(value)


# -- MaintenanceWindow --------------------------------------------------------------------


def window_row(obj: Mapping[str, Any], now: datetime) -> Row:
    ns, name, spec, status = _meta(obj)
    judge = _Judge()
    _common(obj, status, judge)
    active = _condition(status, "Active").get("status") == "True"
    current = status.get("currentWindow") or {}
    nxt = status.get("nextWindow") or {}
    history = list(status.get("history") or [])
    last = str(status.get("lastResult") or "") or None
    state = "Scheduled" if nxt else "NoUpcoming"
    pre = (current.get("preChecks") or {}).get("state")
    if current and not active and pre in ("Pending", "Running"):
        state = "PreChecks"
        judge.add("Active")
    if pre == "Failed":
        judge.add(
            "Warning", f"pre-checks failed: {(current.get('preChecks') or {}).get('message')}"
        )
    if active:
        state = "Active"
        judge.add("Active")
    if spec.get("suspend"):
        state = "Suspended"
    if last in ("Failed", "Skipped"):
        message = history[0].get("message") if history else None
        judge.add("Warning", f"last window {last}: {message}" if message else f"last window {last}")
    if not status:
        state = "Unknown"
    fields = {
        "active": active,
        "activeUntil": current.get("end") if active else None,
        "nextStart": nxt.get("start"),
        "nextStartLocal": nxt.get("startLocal"),
        "lastResult": last,
        "frozenTargets": list(status.get("frozenTargets") or []),
    }
    if active:
        window = f"active until {current.get('endLocal') or current.get('end')}"
    elif nxt:
        when = ago(_time(nxt.get("start")), now)
        window = f"next {nxt.get('startLocal') or nxt.get('start')} ({when})"
    else:
        window = "-"
    cells = (window, last or "-")
    state = _state(status, state)
    return Row(
        "MaintenanceWindow", ns, name, judge.level, state, tuple(judge.problems), fields, cells
    )
