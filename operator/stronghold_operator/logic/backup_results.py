"""BackupSchedule results: reading the schedule's Jobs and pods, recording finished Jobs.

Pure: the service hands in what its ports listed and the status being built; a finished
Job becomes a status entry, Events (as data) and a :class:`Finished` for the metrics.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from stronghold_operator import conditions as cond
from stronghold_operator.logic import backup as lb
from stronghold_operator.logic.backup_offsite import apply_offsite, offsite_events
from stronghold_operator.logic.backup_runs import last_run
from stronghold_operator.models.backup import ANNOTATION_SLOT, ANNOTATION_TRIGGER, LABEL_KIND

ANNOTATION_REQUEST = "ops.stronghold.io/request"

Failure = tuple[str, str]  # (reason, message)


def controller_uid(meta: Mapping[str, Any]) -> str:
    """The uid of the object's controlling owner ("" when none)."""
    for ref in meta.get("ownerReferences") or ():
        if ref.get("controller"):
            return str(ref.get("uid") or "")
    return ""


def _outcome(conditions: Iterable[Mapping[str, Any]]) -> tuple[bool, bool, Failure | None]:
    """(finished, succeeded, failure) from a Job's status conditions."""
    done, ok, failure = False, False, None
    for c in conditions:
        if c.get("status") != "True":
            continue
        if c.get("type") == "Complete":
            done, ok = True, True
        elif c.get("type") == "Failed":
            done = True
            failure = (str(c.get("reason") or "JobFailed"), str(c.get("message") or ""))
    return done, ok, failure


@dataclass
class JobView:
    """What the pass needs from one Job of the schedule."""

    name: str
    kind: str
    slot: str = ""
    trigger: str = ""
    request: str | None = None
    finished: bool = False
    succeeded: bool = False
    failure: Failure | None = None
    created: str = ""
    deleting: bool = False
    uid: str = ""
    controller: str = ""  # uid of the controlling owner (ours: the BackupSchedule)
    message: str | None = None  # its pod's termination message (the result, as JSON)

    @classmethod
    def of(cls, job: Mapping[str, Any]) -> JobView:
        meta = job.get("metadata") or {}
        ann = meta.get("annotations") or {}
        done, ok, failure = _outcome((job.get("status") or {}).get("conditions") or ())
        return cls(
            name=meta.get("name", ""),
            kind=(meta.get("labels") or {}).get(LABEL_KIND, "backup"),
            slot=ann.get(ANNOTATION_SLOT, ""),
            trigger=ann.get(ANNOTATION_TRIGGER, ""),
            request=ann.get(ANNOTATION_REQUEST),
            finished=done,
            succeeded=ok,
            failure=failure,
            created=str(meta.get("creationTimestamp") or ""),
            deleting=bool(meta.get("deletionTimestamp")),
            uid=str(meta.get("uid") or ""),
            controller=controller_uid(meta),
        )

    @classmethod
    def failed(cls, start: lb.Start, request: str | None, failure: Failure) -> JobView:
        """A run that never got its Job (blocked or name taken), recorded as failed."""
        slot = cond.rfc3339(start.slot)
        return cls(start.name, start.kind, slot, start.trigger, request, True, False, failure)


def pod_results(
    pods: Iterable[Mapping[str, Any]], jobs: Mapping[str, str]
) -> dict[str, tuple[str, str | None]]:
    """job name -> (pod phase, termination message) of the pods our Jobs control.

    ``jobs`` maps the uids of the schedule's own Jobs to their names: a pod counts only if
    one of them controls it (labels can be copied by anyone who may create pods).
    """
    out: dict[str, tuple[str, str | None]] = {}
    for pod in pods:
        meta = pod.get("metadata") or {}
        job = jobs.get(controller_uid(meta))
        # A pod being deleted (someone deleted it mid-run) dies of the SIGTERM: its exit is
        # not the Job's outcome, which the Job's replacement pod or its own status gives.
        if not job or meta.get("deletionTimestamp"):
            continue
        st = pod.get("status") or {}
        message = None
        for cs in st.get("containerStatuses") or []:
            message = ((cs.get("state") or {}).get("terminated") or {}).get("message") or message
        out[job] = (str(st.get("phase") or ""), message)
    return out


def is_recorded(
    name: str,
    kind: str,
    status: Mapping[str, Any],
    limit: int,
    created: Mapping[str, str] | None = None,
) -> bool:
    """Has this finished Job's result been written to status already?

    Job names end in the UTC minute, so within a schedule and kind they sort by time: a
    verify or restore-test Job is recorded if it is not newer than the last one in status;
    a backup Job if it is in the bounded history, or older than all of a full history.
    Two on-demand Jobs of one minute differ only by their request's hash, which says
    nothing of their order: ``created`` (Job name -> creationTimestamp) orders them. (By
    name alone, a second restore test in a minute whose hash sorted lower was taken for
    recorded, and its result never reached status.)
    """
    if kind == "backup":
        names = [str(b.get("name")) for b in status.get("backups") or []]
        if name in names:
            return True
        return len(names) >= limit and bool(names) and name < min(names)
    key = "lastVerification" if kind == "verify" else "lastRestoreTest"
    last = str((status.get(key) or {}).get("job") or "")
    if not last or name == last:
        return bool(last)
    minute, last_minute = lb.job_minute(name), lb.job_minute(last)
    if not minute or minute != last_minute:
        return name <= last
    if created is not None and name in created and last in created:
        return created[name] <= created[last]
    return False  # the recorded Job is gone: record this one rather than lose it


def recorded(status: Mapping[str, Any]) -> set[str]:
    """Names of every Job whose result status holds."""
    names = {str(b.get("name")) for b in status.get("backups") or []}
    for key in ("lastVerification", "lastRestoreTest"):
        job = (status.get(key) or {}).get("job")
        if job:
            names.add(str(job))
    return names


# -- recording ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Finished:
    """A recorded Job, for the metrics: its kind, result and what the series show."""

    kind: str
    outcome: str  # Succeeded or Failed
    duration: float | None = None
    completed: datetime | None = None  # a successful backup's completion
    size: float | None = None


@dataclass
class Report:
    """One pass's results: the status being built, the Events to send, the Jobs recorded."""

    status: dict[str, Any]
    now: datetime
    events: list[Event] = field(default_factory=list)
    finished: list[Finished] = field(default_factory=list)

    def note(self, kind: str, reason: str, message: str) -> None:
        self.events.append(Event(kind, reason, message[:1000]))


def record(report: Report, history_limit: int, job: JobView, result: lb.JobResult | None) -> None:
    """Put one finished Job's outcome into status, Events and the metrics list."""
    ok = result is not None and result.ok
    duration = None
    if result is not None and result.data.get("durationSeconds") is not None:
        duration = float(result.data["durationSeconds"])
    failure = job.failure if not job.succeeded else None
    _record_run(report, result)
    if job.kind == "backup":
        _record_backup(report, history_limit, job, result, failure, duration)
        return
    report.finished.append(Finished(job.kind, "Succeeded" if ok else "Failed", duration))
    if job.kind == "verify":
        _record_verify(report, job, result, failure)
    else:
        _record_restore_test(report, job, result, failure)


def _record_run(report: Report, result: lb.JobResult | None) -> None:
    """``status.lastRun`` from the run summary a backup or verify Job reports."""
    reported = result.data.get("run") if result is not None else None
    if isinstance(reported, Mapping):
        new = last_run(report.status.get("lastRun"), reported)
        if new is not None:
            report.status["lastRun"] = new


def _record_backup(
    report: Report,
    limit: int,
    job: JobView,
    result: lb.JobResult | None,
    failure: Failure | None,
    duration: float | None,
) -> None:
    entry = lb.backup_entry(job.name, result, failure)
    entry["trigger"] = job.request or job.trigger or "scheduled"
    history = lb.merge_history(report.status.get("backups") or [], entry, limit)
    if result is not None:
        history = _apply_prune_report(report, history, result)
        history = _apply_offsite(report, history, result.data, job.name)
    report.status["backups"] = history
    outcome = "Succeeded" if result is not None and result.ok else "Failed"
    if entry["result"] != "Succeeded":
        report.finished.append(Finished("backup", outcome, duration))
        report.note(
            "Warning",
            str(entry.get("reason") or "BackupFailed"),
            f"backup Job {job.name} failed: {entry.get('message', '')}",
        )
        return
    completed = cond.parse_rfc3339(entry.get("completedAt")) or report.now
    size = float(entry.get("sizeBytes") or 0)
    report.finished.append(Finished("backup", outcome, duration, completed, size))
    report.note(
        "Normal",
        "BackupSucceeded",
        f"{entry.get('file')}: {entry.get('sizeBytes')} bytes, "
        f"sha256 {str(entry.get('sha256', ''))[:12]}, verified, "
        f"{entry.get('tables')} tables / {entry.get('rows')} rows (Job {job.name})",
    )
    report.note("Normal", "BackupVerified", f"{entry.get('file')} passed verification")


def _failed_files(data: Mapping[str, Any]) -> dict[str, Failure]:
    return {
        str(f.get("file")): (str(f.get("reason")), str(f.get("message", "")))
        for f in data.get("failed") or []
        if isinstance(f, Mapping)
    }


def _record_verify(
    report: Report, job: JobView, result: lb.JobResult | None, failure: Failure | None
) -> None:
    data = result.data if result is not None else {}
    failed = _failed_files(data)
    passed = [str(p) for p in data.get("passed") or []]
    report.status["backups"] = lb.apply_verification(
        report.status.get("backups") or [],
        failed,
        passed,
        [str(p) for p in data.get("pruned") or []],
    )
    report.status["backups"] = _apply_offsite(report, report.status["backups"], data, job.name)
    ok_job = result is not None and result.ok
    error = result.message if result is not None else (failure or ("", ""))[1]
    report.status["lastVerification"] = {
        "time": str(data.get("completed") or cond.rfc3339(report.now)),
        "job": job.name,
        "checked": int(data.get("checked") or 0),
        "failed": [f"{f}: {r[0]}" for f, r in failed.items()][:20],
        "result": ("Failed" if failed else "Passed") if ok_job else "Error",
        "message": "" if ok_job else error,
    }
    for f, (reason, msg) in failed.items():
        report.note("Warning", "VerificationFailed", f"{f}: {reason}: {msg}")
    if ok_job and not failed:
        report.note(
            "Normal", "BackupVerified", f"{len(passed)} archive(s) re-verified (Job {job.name})"
        )
    if not ok_job:
        report.note("Warning", "VerificationError", f"verify Job {job.name} failed: {error}")
    _note_pruned(report, data)


_RESTORE_FIELDS = (
    "backup",
    "scratchDatabase",
    "target",
    "server",
    "durationSeconds",
    "restoreSeconds",
    "tablesCompared",
    "rowsCompared",
)


def _record_restore_test(
    report: Report, job: JobView, result: lb.JobResult | None, failure: Failure | None
) -> None:
    data = result.data if result is not None else {}
    passed = result is not None and result.ok
    entry: dict[str, Any] = {
        "time": str(data.get("completed") or cond.rfc3339(report.now)),
        "job": job.name,
        "result": "Passed" if passed else "Failed",
    }
    entry.update({k: data[k] for k in _RESTORE_FIELDS if data.get(k) is not None})
    if passed:
        throwaway = entry.get("target") == "throwaway"
        report.note(
            "Normal",
            "RestoreTestPassed",
            f"{entry.get('backup')} restored into {entry.get('scratchDatabase')}"
            f"{' on a throwaway server' if throwaway else ''} in "
            f"{entry.get('restoreSeconds')}s: {entry.get('tablesCompared')} tables, "
            f"{entry.get('rowsCompared')} rows match "
            f"({'throwaway server deleted' if throwaway else 'scratch database dropped'})",
        )
    else:
        if result is not None:
            entry["reason"], entry["message"] = result.reason, result.message
        else:
            entry["reason"], entry["message"] = failure or (
                "NoResult",
                "the Job ended without a result",
            )
        report.note("Warning", "RestoreTestFailed", f"Job {job.name}: {entry['message']}")
    report.status["lastRestoreTest"] = entry


def _apply_prune_report(
    report: Report, history: list[dict[str, Any]], result: lb.JobResult
) -> list[dict[str, Any]]:
    data = result.data
    failed = _failed_files(data)
    for f, (reason, msg) in failed.items():
        report.note("Warning", "VerificationFailed", f"{f}: {reason}: {msg}")
    _note_pruned(report, data)
    return lb.apply_verification(history, failed, (), [str(p) for p in data.get("pruned") or []])


def _apply_offsite(
    report: Report, history: list[dict[str, Any]], data: Mapping[str, Any], job: str
) -> list[dict[str, Any]]:
    """The Job's off-site copies (spec.offsite) into the entries, and their Events."""
    offsite = data.get("offsite")
    if not isinstance(offsite, Mapping):
        return history
    for type_, reason, message in offsite_events(offsite, job):
        report.note(type_, reason, message)
    return apply_offsite(history, offsite)


def _note_pruned(report: Report, data: Mapping[str, Any]) -> None:
    pruned = [str(p) for p in data.get("pruned") or []]
    count = int(data.get("prunedCount") or len(pruned))
    if count:
        shown = ", ".join(pruned[:5]) + (" …" if count > 5 else "")
        report.note("Normal", "Pruned", f"{count} archive(s) removed by retention: {shown}")
    if data.get("pruneError"):
        report.note("Warning", "PruneFailed", str(data["pruneError"]))
    held = data.get("retentionHeld")
    if isinstance(held, Mapping):
        report.note("Warning", "RetentionHeld", f"{held.get('reason')}: {held.get('message')}")
