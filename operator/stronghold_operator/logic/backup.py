"""BackupSchedule decisions: what to start now, what to keep, what the status says.

Pure functions; the clock is an argument. The service (services/backup.py) feeds them what
it read from the cluster (Jobs, pod termination messages, the object's status) and acts on
the answers.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from stronghold_operator import conditions as cond
from stronghold_operator.logic.cron import CronError, CronSchedule, MissedRuns, missed_runs
from stronghold_operator.models.backup import BackupScheduleSpec
from stronghold_operator.models.base import InvalidSpec

JobKind = Literal["backup", "verify", "restore-test"]
Trigger = Literal["scheduled", "catch-up", "on-demand"]

# Condition types of this kind.
LAST_BACKUP_SUCCEEDED = "LastBackupSucceeded"
BACKUP_VERIFIED = "BackupVerified"
BACKUP_STALE = "BackupStale"
RESTORE_TEST_PASSED = "RestoreTestPassed"
CONDITION_TYPES = [
    cond.READY,
    LAST_BACKUP_SUCCEEDED,
    BACKUP_VERIFIED,
    BACKUP_STALE,
    RESTORE_TEST_PASSED,
]

_NAME_MAX = 63  # Job names become label values (job-name), which are limited to 63 characters


# -- schedules ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedules:
    backup: CronSchedule
    verify: CronSchedule | None
    restore_test: CronSchedule | None


def compile_schedules(spec: BackupScheduleSpec) -> Schedules:
    """Parse every cron expression of the spec in its zone; :class:`InvalidSpec` if unusable."""
    try:
        CronSchedule.parse("0 0 * * *", spec.time_zone)
    except CronError as exc:
        raise InvalidSpec("timeZone", str(exc)) from None

    def one(expr: str, where: str) -> CronSchedule:
        try:
            return CronSchedule.parse(expr, spec.time_zone)
        except CronError as exc:
            raise InvalidSpec(where, str(exc)) from None

    rt = spec.verify.restore_test
    return Schedules(
        backup=one(spec.schedule, "schedule"),
        verify=one(spec.verify.schedule, "verify.schedule") if spec.verify.schedule else None,
        restore_test=(
            one(rt.schedule, "verify.restoreTest.schedule") if rt and not rt.suspend else None
        ),
    )


def job_name(
    schedule: str, slot: datetime, kind: JobKind = "backup", request: str | None = None
) -> str:
    """``<schedule>-<YYYYMMDDHHMM>`` (UTC), shortened with a hash to fit 63 characters.

    Deterministic: the same slot always gives the same name, so a retry or a restarted
    operator finds (and adopts) the Job instead of creating a second one. On-demand runs add
    a short hash of the request value, so they never collide with the minute's slot.
    """
    infix = {"backup": "", "verify": "verify-", "restore-test": "restoretest-"}[kind]
    suffix = f"-{infix}{slot.astimezone(UTC).strftime('%Y%m%d%H%M')}"
    if request is not None:
        suffix += "-" + hashlib.sha256(request.encode()).hexdigest()[:5]
    if len(schedule) + len(suffix) <= _NAME_MAX:
        return schedule + suffix
    digest = hashlib.sha256(schedule.encode()).hexdigest()[:8]
    head = schedule[: _NAME_MAX - len(suffix) - 9].rstrip("-.")
    return f"{head}-{digest}{suffix}"


_JOB_MINUTE = re.compile(r"-(\d{12})(?:-[0-9a-f]{5})?$")


def job_minute(job: str) -> str:
    """The UTC minute (``YYYYMMDDHHMM``) a :func:`job_name` ends in; "" when it has none."""
    found = _JOB_MINUTE.search(job)
    return found.group(1) if found else ""


def scratch_database(db: str, when: datetime) -> str:
    """``<db>_restoretest_<YYYYMMDDHHMMSS>``, within PostgreSQL's 63-byte identifier limit."""
    suffix = f"_restoretest_{when.astimezone(UTC).strftime('%Y%m%d%H%M%S')}"
    return db[: 63 - len(suffix)] + suffix


@dataclass(frozen=True)
class Start:
    """A Job to create now."""

    name: str
    kind: JobKind
    slot: datetime
    trigger: Trigger


@dataclass(frozen=True)
class Decision:
    """What to do about one schedule (backup, verify or restore test) at ``now``."""

    start: Start | None = None
    replace: tuple[str, ...] = ()  # active Jobs to delete before starting (Replace)
    cursor: datetime | None = None  # the new "last handled slot" (None: unchanged)
    next_run: datetime | None = None
    missed: MissedRuns | None = None  # set when slots were skipped: worth an Event
    waiting: str | None = None  # why a due run did not start (Forbid, suspended)
    request_taken: str | None = None  # the on-demand request this start answers


def floor_minute(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(second=0, microsecond=0)


# long: 16 keyword inputs and the rules they follow are two thirds of it; the body is 33 lines.
def decide(
    sched: CronSchedule,
    *,
    name: str,
    kind: JobKind,
    now: datetime,
    created: datetime,
    cursor: datetime | None,
    suspend: bool,
    policy: Literal["Forbid", "Replace"],
    deadline: timedelta | None,
    active: Sequence[str],
    done: Collection[str],
    request: str | None = None,
    handled_request: str | None = None,
    answered: Collection[str] = (),
    defer: str | None = None,
) -> Decision:
    """The schedule decision, level-triggered: call it as often as you like.

    * ``cursor`` is the last slot already handled (``status.lastScheduleTime``); without one,
      slots count from ``created``.
    * Of the slots missed since the cursor at most one runs, and only if it is within
      ``deadline`` of its time (like a CronJob's startingDeadlineSeconds).
    * ``policy``: what happens while a Job of this kind is ``active`` (:func:`_start_or_wait`).
    * ``suspend`` skips scheduled slots for good (they are not caught up after resuming);
      an on-demand ``request`` (a new annotation value) still runs.
    * ``defer`` (the maintenance windows holding the schedule) holds scheduled slots like
      Forbid does: the cursor stays, so the slot runs as the one catch-up once the window
      releases the schedule (within ``deadline``); on-demand requests still run.
    * A slot whose Job name is in ``done`` (already recorded) or ``active`` is never started
      again, nor a request in ``answered`` (request values carried by existing Jobs): that is
      what makes restarts and failed status writes harmless.
    """
    base = cursor or created
    next_run = sched.next_after(now)
    pending_request = request if request and request != handled_request else None
    already = pending_request if pending_request in answered else None
    if already is not None:
        pending_request = None  # an existing Job carries it: adopt, never start another
    due, new_cursor, missed = _scheduled_slot(
        sched, name, kind, base, now, deadline, suspend, [*active, *done]
    )
    deferred = None
    if due is not None and defer:
        # Hold the slot (cursor unchanged): it becomes the catch-up once the window ends.
        due, new_cursor, missed = None, cursor, None
        deferred = f"deferred: maintenance window {defer} is in progress"
    if due is None and pending_request is not None:
        slot = floor_minute(now)
        due = Start(job_name(name, slot, kind, pending_request), kind, slot, "on-demand")
        if due.name in done or due.name in active:
            return Decision(
                cursor=new_cursor, next_run=next_run, missed=missed, request_taken=pending_request
            )
    if due is None:
        return Decision(
            cursor=new_cursor,
            next_run=next_run,
            missed=missed,
            waiting=deferred,
            request_taken=already,
        )
    return _start_or_wait(
        due, policy, active, cursor, Decision(cursor=new_cursor, next_run=next_run, missed=missed),
        pending_request or already, already,
    )  # fmt: skip


def _start_or_wait(
    due: Start,
    policy: Literal["Forbid", "Replace"],
    active: Sequence[str],
    cursor: datetime | None,
    planned: Decision,
    taken: str | None,
    already: str | None,
) -> Decision:
    """Start ``due`` (``planned`` holds the new cursor, next run and missed slots), unless
    ``Forbid`` and a Job of this kind is still ``active``: then nothing starts and a
    scheduled slot stays pending (it may still start later, within the deadline).
    ``Replace``: the active Jobs are deleted and the new one starts."""
    if active and policy == "Forbid":
        on_demand = due.trigger == "on-demand"
        return replace(
            planned,
            cursor=planned.cursor if on_demand else cursor,
            # Not yet: the same slots would be reported on every tick of the wait. They are
            # reported once, with the catch-up that starts or when the deadline skips them.
            missed=planned.missed if on_demand else None,
            waiting=f"{len(active)} Job(s) still running: {', '.join(sorted(active))}",
            request_taken=already,
        )
    replaced = tuple(sorted(active)) if policy == "Replace" else ()
    return replace(planned, start=due, replace=replaced, request_taken=taken)


def _scheduled_slot(
    sched: CronSchedule,
    name: str,
    kind: JobKind,
    base: datetime,
    now: datetime,
    deadline: timedelta | None,
    suspend: bool,
    started: Collection[str],
) -> tuple[Start | None, datetime | None, MissedRuns | None]:
    """The scheduled slot to start now (if any), the new cursor, and the missed slots to
    report: of the slots since ``base`` at most one runs, within ``deadline`` of its time,
    never one whose Job name is in ``started`` (active or recorded)."""
    mr = missed_runs(sched, base, now, deadline)
    if not mr.missed:
        return None, None, None
    cursor = sched.previous_at_or_before(now)
    if suspend:
        return None, cursor, None
    if mr.run is None:
        return None, cursor, mr  # every missed slot is past the deadline
    late = mr.skipped or now - mr.run > timedelta(minutes=1)
    trigger: Trigger = "catch-up" if late else "scheduled"
    due = Start(job_name(name, mr.run, kind), kind, mr.run, trigger)
    missed = mr if mr.skipped else None
    if due.name in started:
        return None, cursor, missed  # started once already (maybe by an operator that died)
    return due, cursor, missed


# -- retention ----------------------------------------------------------------------------


# Which archives to delete is logic.retention: the backup Job runs that module itself.


# -- job results --------------------------------------------------------------------------

_CLASSES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"password authentication failed|authentication failed", re.I), "AuthFailed"),
    (re.compile(r"no password supplied|fe_sendauth", re.I), "AuthFailed"),
    (re.compile(r'database ".*" does not exist', re.I), "DatabaseNotFound"),
    (re.compile(r'role ".*" does not exist', re.I), "RoleNotFound"),
    (re.compile(r"No space left on device|Disk quota exceeded", re.I), "StorageFull"),
    (re.compile(r"Permission denied|Read-only file system", re.I), "StorageNotWritable"),
    (
        re.compile(r"could not connect|Connection refused|could not translate host", re.I),
        "ConnectionFailed",
    ),
    (re.compile(r"timeout expired|timed out", re.I), "ConnectionFailed"),
    (re.compile(r"remaining connection slots|too many clients", re.I), "TooManyConnections"),
    (re.compile(r"permission denied for", re.I), "InsufficientPrivilege"),
    # The helper checking the archive while it is written (after pg_dump's own errors).
    (
        re.compile(r"gzip stream is|dump is incomplete|differs from the verified stream"),
        "VerificationFailed",
    ),
]


_STORAGE_STAGES = {"storage", "dump", "verify", "checksum", "sources", "publish", "prune"}


def classify(stage: str, error: str) -> str:
    """A one-word reason for a failed Job, from the stage that failed and its stderr."""
    if stage == "setup" and "password Secret" in error:
        return "SecretUnreadable"
    for pattern, reason in _CLASSES:
        if reason in ("StorageFull", "StorageNotWritable") and stage not in _STORAGE_STAGES:
            continue
        if pattern.search(error):
            return reason
    return {
        "dump": "DumpFailed",
        "verify": "VerificationFailed",
        "checksum": "ChecksumMismatch",
        "counts": "RowCountFailed",
        "restore": "RestoreFailed",
        "prune": "PruneFailed",
        "sources": "SourceFailed",
        "setup": "SetupFailed",
    }.get(stage, "JobFailed")


@dataclass(frozen=True)
class JobResult:
    """A Job's outcome as reported in its pod's termination message (JSON)."""

    ok: bool
    kind: str
    data: Mapping[str, Any]

    @property
    def reason(self) -> str:
        if self.ok:
            return "Succeeded"
        given = self.data.get("reason")
        if isinstance(given, str) and re.fullmatch(r"[A-Z][A-Za-z]{1,63}", given):
            return given
        return classify(str(self.data.get("stage", "")), str(self.data.get("error", "")))

    @property
    def message(self) -> str:
        return str(self.data.get("error") or self.data.get("message") or "")[:500]


def parse_result(message: str | None) -> JobResult | None:
    """The termination message of a backup/verify/restore-test container, or None."""
    if not message:
        return None
    try:
        data = json.loads(message)
    except ValueError:
        return None
    if not isinstance(data, dict) or "ok" not in data:
        return None
    return JobResult(bool(data["ok"]), str(data.get("kind", "")), data)


# -- status -------------------------------------------------------------------------------


def stale(
    last_verified: datetime | None, created: datetime, now: datetime, stale_after: timedelta
) -> cond.Condition:
    """BackupStale: True when no verified backup is younger than ``stale_after``."""
    if last_verified is None:
        if now - created > stale_after:
            return cond.Condition(
                BACKUP_STALE,
                "True",
                "NoVerifiedBackup",
                f"no verified backup since the schedule was created {_age(now - created)} ago",
            )
        return cond.Condition(BACKUP_STALE, "False", "NoBackupYet", "within staleAfter of creation")
    age = now - last_verified
    if age > stale_after:
        return cond.Condition(
            BACKUP_STALE,
            "True",
            "BackupTooOld",
            f"newest verified backup is {_age(age)} old (staleAfter {_age(stale_after)})",
        )
    return cond.Condition(
        BACKUP_STALE, "False", "BackupFresh", f"newest verified backup is {_age(age)} old"
    )


def _age(d: timedelta) -> str:
    s = int(d.total_seconds())
    if s >= 86400:
        return f"{s // 86400}d{(s % 86400) // 3600}h"
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60}m"
    return f"{s // 60}m{s % 60}s"


def summarize(
    backups: Sequence[Mapping[str, Any]],
    last_restore_test: Mapping[str, Any] | None,
    restore_test_configured: bool,
    created: datetime,
    now: datetime,
    stale_after: timedelta,
    blocked: cond.Condition | None = None,
) -> tuple[list[cond.Condition], datetime | None]:
    """Conditions from the recorded history; returns them and the last verified time.

    ``backups`` is ``status.backups`` (newest first). ``blocked`` is a LastBackupSucceeded=False
    condition for a problem found before a Job could start (missing Secret or PVC).
    """
    finished = [b for b in backups if b.get("result") in ("Succeeded", "Failed")]
    last = blocked if blocked is not None else _last_backup_condition(finished)
    good = [b for b in finished if b["result"] == "Succeeded" and b.get("file")]
    verified = _verified_condition(good)
    times = [
        cond.parse_rfc3339(b.get("completedAt"))
        for b in good
        if b.get("verified") and not b.get("pruned")
    ]
    last_verified = max((t for t in times if t is not None), default=None)
    stale_c = stale(last_verified, created, now, stale_after)
    rt = _restore_test_condition(last_restore_test, restore_test_configured)
    problems = [c for c in (last, verified, rt) if c.status == "False"]
    if stale_c.status == "True":
        problems.append(stale_c)
    if problems:
        ready = cond.Condition(cond.READY, "False", problems[0].reason, problems[0].message)
    elif last.status == "Unknown":
        ready = cond.Condition(cond.READY, "True", "Scheduled", "waiting for the first backup")
    else:
        ready = cond.Condition(cond.READY, "True", "BackupsHealthy", last.message)
    return [ready, last, verified, stale_c, rt], last_verified


def _last_backup_condition(finished: Sequence[Mapping[str, Any]]) -> cond.Condition:
    if not finished:
        return cond.Condition(
            LAST_BACKUP_SUCCEEDED, "Unknown", "NoBackupYet", "no backup has run yet"
        )
    b = finished[0]
    if b["result"] == "Succeeded":
        return cond.Condition(
            LAST_BACKUP_SUCCEEDED,
            "True",
            "BackupCompleted",
            f"{b.get('file')} ({b.get('sizeBytes', 0)} bytes) by Job {b.get('name')}",
        )
    return cond.Condition(
        LAST_BACKUP_SUCCEEDED,
        "False",
        str(b.get("reason") or "BackupFailed"),
        f"Job {b.get('name')}: {b.get('message', '')}"[:1000],
    )


def _verified_condition(good: Sequence[Mapping[str, Any]]) -> cond.Condition:
    if not good:
        return cond.Condition(BACKUP_VERIFIED, "Unknown", "NoBackupYet", "no backup to verify")
    if good[0].get("verified"):
        return cond.Condition(
            BACKUP_VERIFIED,
            "True",
            "Verified",
            f"{good[0]['file']}: integrity checked, sha256 {str(good[0].get('sha256', ''))[:12]}…",
        )
    return cond.Condition(
        BACKUP_VERIFIED,
        "False",
        str(good[0].get("verifyReason") or "VerificationFailed"),
        f"{good[0]['file']}: {good[0].get('verifyMessage') or 'failed verification'}",
    )


def _restore_test_condition(last: Mapping[str, Any] | None, configured: bool) -> cond.Condition:
    if not configured:
        return cond.Condition(
            RESTORE_TEST_PASSED, "Unknown", "NotConfigured", "verify.restoreTest is not set"
        )
    if not last:
        return cond.Condition(
            RESTORE_TEST_PASSED, "Unknown", "NotRunYet", "no restore test has run yet"
        )
    if last.get("result") == "Passed":
        return cond.Condition(
            RESTORE_TEST_PASSED,
            "True",
            "RowCountsMatch",
            f"{last.get('backup')}: {last.get('tablesCompared')} tables, "
            f"{last.get('rowsCompared')} rows match"
            + (" (throwaway server)" if last.get("target") == "throwaway" else ""),
        )
    return cond.Condition(
        RESTORE_TEST_PASSED,
        "False",
        str(last.get("reason") or "RestoreTestFailed"),
        str(last.get("message") or "restore test failed")[:1000],
    )


def backup_entry(
    name: str, result: JobResult | None, job_failure: tuple[str, str] | None = None
) -> dict[str, Any]:
    """The ``status.backups`` item for a finished backup Job.

    ``job_failure`` is (reason, message) from the Job itself when the container left no
    result (deadline exceeded, pod deleted, image missing, Job vanished).
    """
    if result is None:
        reason, message = job_failure or (
            "NoResult",
            "the Job ended without a result in its termination message",
        )
        return {
            "name": name,
            "result": "Failed",
            "reason": reason,
            "message": message,
            "verified": False,
        }
    d = result.data
    entry: dict[str, Any] = {
        "name": name,
        "result": "Succeeded" if result.ok else "Failed",
        "verified": bool(result.ok and d.get("verified")),
    }
    for src, dst in (
        ("file", "file"),
        ("size", "sizeBytes"),
        ("sha256", "sha256"),
        ("started", "startedAt"),
        ("completed", "completedAt"),
        ("durationSeconds", "durationSeconds"),
        ("tables", "tables"),
        ("rows", "rows"),
    ):
        if d.get(src) is not None:
            entry[dst] = d[src]
    if not result.ok:
        entry["reason"] = result.reason
        entry["message"] = result.message
        entry.pop("file", None)  # a failed run never leaves a file under a final name
    return entry


def merge_history(
    backups: Sequence[Mapping[str, Any]], entry: Mapping[str, Any], limit: int
) -> list[dict[str, Any]]:
    """Put ``entry`` first (replacing one with the same Job name) and bound the list."""
    rest = [dict(b) for b in backups if b.get("name") != entry.get("name")]
    return [dict(entry), *rest][:limit]


def apply_verification(
    backups: Sequence[Mapping[str, Any]],
    failed: Mapping[str, tuple[str, str]],
    passed: Collection[str],
    pruned: Collection[str],
) -> list[dict[str, Any]]:
    """Mark entries by file: failed (file -> (reason, message)), re-verified, or pruned."""
    out: list[dict[str, Any]] = []
    for b in backups:
        e = dict(b)
        f = str(e.get("file") or "")
        if f in failed:
            e["verified"] = False
            e["verifyReason"], e["verifyMessage"] = failed[f]
        elif f in passed:
            e["verified"] = True
            e.pop("verifyReason", None)
            e.pop("verifyMessage", None)
        if f in pruned:
            e["pruned"] = True
        out.append(e)
    return out


def protected_files(backups: Sequence[Mapping[str, Any]], min_keep: int) -> list[str]:
    """Files the operator tells a prune never to delete: its newest verified backups.

    The Job applies the same rules to what it finds on disk; this list makes sure a file
    the operator relies on (e.g. the one a restore test is about to use) survives even if
    the disk copy of its manifest were lost.
    """
    good = [
        str(b["file"])
        for b in backups
        if b.get("result") == "Succeeded"
        and b.get("verified")
        and b.get("file")
        and not b.get("pruned")
    ]
    return good[: max(1, min_keep)]


def storage_full_request(backups: Sequence[Mapping[str, Any]], handled: str | None) -> str | None:
    """The prune to ask for when the newest backup failed because its volume is full.

    Retention runs only after a successful backup or in a verify Job: without
    ``verify.schedule``, a volume filled with archives that retention would now delete
    (``retention.days`` lowered, say) failed every backup for ever. The value names the
    failed Job, so each such failure asks for one verify Job (which prunes), once.
    """
    finished = [b for b in backups if b.get("result") in ("Succeeded", "Failed")]
    if not finished or finished[0].get("reason") != "StorageFull":
        return None
    value = f"storage-full:{finished[0].get('name')}"
    return None if value == handled else value


def newest_verified(backups: Sequence[Mapping[str, Any]]) -> str | None:
    files = protected_files(backups, 1)
    return files[0] if files else None
