"""BackupSchedule handler: a level-triggered timer that runs backups as Jobs and reports.

Every tick it reads the schedule's Jobs, records the results of finished ones (from their
pods' termination messages), asks :mod:`stronghold_operator.logic.backup` what to start, creates
Jobs with deterministic names (a 409 Conflict means the Job exists: it is adopted), and writes
status, Events and metrics. Nothing is remembered in memory: after a restart the next tick
sees the same Jobs and the same status and carries on.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import kopf
from kubernetes.client.exceptions import ApiException
from prometheus_client import Counter, Gauge

from stronghold_operator import conditions as cond
from stronghold_operator.builders.backup_job import Kind, backup_job
from stronghold_operator.builders.backup_program import ANNOTATION_PROGRAM, program_configmap
from stronghold_operator.controllers.common import (
    GROUP,
    VERSION,
    invalid_spec,
    maintenance_hold,
    services,
    track_watch,
    write_status,
)
from stronghold_operator.logic import backup as lb
from stronghold_operator.logic.cron import CronSchedule
from stronghold_operator.metrics import per_object, registry
from stronghold_operator.models.backup import (
    ALLOW_PRIVILEGED_ENV,
    ANNOTATION_SLOT,
    ANNOTATION_TRIGGER,
    BACKUP_NOW,
    LABEL_KIND,
    LABEL_SCHEDULE,
    RESTORE_TEST_NOW,
    VERIFY_NOW,
    BackupScheduleSpec,
    check_restricted,
    parse_allowance,
    schedule_label,
)
from stronghold_operator.models.base import InvalidSpec, parse
from stronghold_operator.platforms.configmaps import ensure_configmap
from stronghold_operator.platforms.kube import (
    Kube,
    call,
    is_conflict,
    is_not_found,
    patch_status,
    read_secret_key,
)

PLURAL = "backupschedules"
ANNOTATION_REQUEST = "ops.stronghold.io/request"
TICK = 10.0
# Finished Jobs kept per kind after their result is in status (for `kubectl logs`).
KEEP_FINISHED = 3

track_watch(PLURAL)

LAST_SUCCESS = Gauge(
    "stronghold_backup_last_success_timestamp_seconds",
    "Unix time the last successful backup completed",
    ["namespace", "schedule"],
    registry=registry,
)
LAST_SIZE = Gauge(
    "stronghold_backup_last_size_bytes",
    "Size of the last successful backup archive",
    ["namespace", "schedule"],
    registry=registry,
)
LAST_DURATION = Gauge(
    "stronghold_backup_last_duration_seconds",
    "Duration of the last finished Job, by kind (backup, verify, restore-test)",
    ["namespace", "schedule", "kind"],
    registry=registry,
)
RESULTS = Counter(
    "stronghold_backup_results_total",
    "Finished backup, verify and restore-test Jobs by result",
    ["namespace", "schedule", "kind", "result"],
    registry=registry,
)
# Removed when the schedule is no longer listed (metrics.sweep with the liveness LIST).
per_object(PLURAL, LAST_SUCCESS, LAST_SIZE, LAST_DURATION, RESULTS)


@dataclass
class JobView:
    """What the handler needs from one Job of the schedule."""

    name: str
    kind: str
    slot: str
    trigger: str
    request: str | None
    finished: bool
    succeeded: bool
    failure: tuple[str, str] | None
    created: str
    deleting: bool = False
    uid: str = ""
    controller: str = ""  # uid of the controlling owner (ours: the BackupSchedule)

    @classmethod
    def of(cls, job: Mapping[str, Any]) -> JobView:
        meta = job.get("metadata") or {}
        ann = meta.get("annotations") or {}
        st = job.get("status") or {}
        failure: tuple[str, str] | None = None
        done = False
        ok = False
        for c in st.get("conditions") or ():
            if c.get("status") != "True":
                continue
            if c.get("type") == "Complete":
                done, ok = True, True
            elif c.get("type") == "Failed":
                done = True
                failure = (str(c.get("reason") or "JobFailed"), str(c.get("message") or ""))
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
            controller=_controller(meta),
        )


def _controller(meta: Mapping[str, Any]) -> str:
    for ref in meta.get("ownerReferences") or ():
        if ref.get("controller"):
            return str(ref.get("uid") or "")
    return ""


@dataclass
class Tick:
    """One reconciliation: the status being built, and the Events to send."""

    body: kopf.Body
    status: dict[str, Any]
    events: list[tuple[str, str, str]] = field(default_factory=list)

    def note(self, kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason, message[:1000]))


@kopf.timer(GROUP, VERSION, PLURAL, interval=TICK, initial_delay=1.0, id="reconcile")
async def reconcile(
    body: kopf.Body,
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    patch: kopf.Patch,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Run due backups, verifications and restore tests; record results; report status."""
    services(memo).follow(body)  # for the stalled-watch check; dropped once it is unlisted
    now = cond.utcnow()
    current = dict(status)
    if not current.get("conditions"):
        write_status(patch, body, current, {}, cond.unknown_all(lb.CONDITION_TYPES), now)
        await _flush_status(services(memo).kube, meta, patch)
        return
    try:
        model = parse(BackupScheduleSpec, spec)
        scheds = lb.compile_schedules(model)
        # Read per tick: cli/run.py sets it after this module is imported.
        check_restricted(model.job_template, parse_allowance(os.getenv(ALLOW_PRIVILEGED_ENV, "")))
    except InvalidSpec as exc:
        error = invalid_spec(patch, body, current, exc, lb.CONDITION_TYPES, now)
        await _flush_status(services(memo).kube, meta, patch)
        raise error from None
    svc = services(memo)
    svc.remember_windows(_)
    tick = Tick(body=body, status=_copy_status(current))
    await _reconcile(svc.kube, tick, model, scheds, meta, now, maintenance_hold(svc, meta))
    created = cond.parse_rfc3339(meta.get("creationTimestamp")) or now
    rt_on = scheds.restore_test is not None
    conds, last_verified = lb.summarize(
        tick.status.get("backups") or [],
        tick.status.get("lastRestoreTest"),
        rt_on or bool(tick.status.get("lastRestoreTest")),
        created,
        now,
        model.stale_after,
    )
    good = [b for b in tick.status.get("backups") or [] if b.get("result") == "Succeeded"]
    desired = dict(tick.status)
    desired.pop("conditions", None)
    desired.pop("observedGeneration", None)
    if good and good[0].get("completedAt"):
        desired["lastSuccessfulTime"] = good[0]["completedAt"]
    if last_verified is not None:
        desired["lastVerifiedTime"] = cond.rfc3339(last_verified)
    for kind, reason, message in tick.events:
        kopf.event(body, type=kind, reason=reason, message=message)
    write_status(patch, body, current, desired, conds, now)
    await _flush_status(svc.kube, meta, patch)


async def _flush_status(kube: Kube, meta: Mapping[str, Any], patch: kopf.Patch) -> None:
    """Write the status part of kopf's patch now, inside the handler.

    kopf applies its patch after the handler, outside its retries: one refused status write
    (403, or 5xx after its retries) ended this object's timer for good. Failing here, the
    tick fails like any handler error and runs again; the Jobs are found by name then.
    """
    changes = patch.pop("status", None)
    try:
        await patch_status(kube, PLURAL, meta["namespace"], meta["name"], dict(changes or {}))
    except ApiException as exc:
        raise kopf.TemporaryError(
            f"status write refused ({exc.status} {exc.reason}); retried", delay=TICK
        ) from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise kopf.TemporaryError(f"status write failed ({exc!r}); retried", delay=TICK) from None


def _copy_status(status: Mapping[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(dict(status))


async def _reconcile(
    kube: Kube,
    tick: Tick,
    spec: BackupScheduleSpec,
    scheds: lb.Schedules,
    meta: Mapping[str, Any],
    now: datetime,
    held: str | None = None,  # windows holding this schedule (a gone window holds no more)
) -> None:
    ns, name = meta["namespace"], meta["name"]
    label = schedule_label(name)
    listed = await call(
        kube.batch.list_namespaced_job, ns, label_selector=f"{LABEL_SCHEDULE}={label}"
    )
    # Only Jobs this schedule controls: anyone who can create Jobs or pods in the namespace
    # can copy our labels, and their results must not become this schedule's status.
    owned = [
        v for v in (JobView.of(kube.plain(j)) for j in listed.items) if v.controller == meta["uid"]
    ]
    # A Job being deleted (replaced) is neither running nor a result to record; until its
    # pods are gone (Foreground deletion) no new backup starts, so two dumps never overlap.
    jobs = [v for v in owned if not v.deleting]
    draining = [v.name for v in owned if v.deleting and v.kind == "backup"]
    pods = await _pods(kube, ns, label, {v.uid: v.name for v in owned if v.uid})
    for job in jobs:
        # The Job controller can lag well behind its pod on a busy node; with backoffLimit 0 a
        # terminated pod is the Job's outcome, so do not report it as running meanwhile.
        pod = pods.get(job.name)
        if not job.finished and pod is not None and pod[0] in ("Succeeded", "Failed"):
            job.finished, job.succeeded = True, pod[0] == "Succeeded"
            if not job.succeeded:
                job.failure = ("PodFailed", "the backup container exited with an error")
    by_name = {j.name: j for j in jobs}
    before = copy.deepcopy(tick.status)

    def recorded_before(job: JobView) -> bool:
        return _is_recorded(job.name, job.kind, before, spec.history_limit)

    # 1. Results of finished Jobs not recorded yet, oldest first.
    for job in sorted(jobs, key=lambda j: (j.created, j.name)):
        if job.finished and not _is_recorded(job.name, job.kind, tick.status, spec.history_limit):
            message = pods.get(job.name, ("", None))[1]
            _record(tick, spec, ns, name, job, lb.parse_result(message))

    # 2. Jobs status says were running but that are gone: never leave them "running".
    for entry in tick.status.get("active") or []:
        jname = str(entry.get("name", ""))
        jkind = str(entry.get("kind") or "backup")
        if (
            jname
            and jname not in by_name
            and not _is_recorded(jname, jkind, tick.status, spec.history_limit)
        ):
            gone = JobView(
                name=jname,
                kind=str(entry.get("kind") or "backup"),
                slot=str(entry.get("slot") or ""),
                trigger=str(entry.get("trigger") or ""),
                request=None,
                finished=True,
                succeeded=False,
                failure=("JobVanished", "the Job was deleted before its result was recorded"),
                created="",
            )
            _record(tick, spec, ns, name, gone, None)

    active = [j for j in jobs if not j.finished]
    tick.status["active"] = [
        {"name": j.name, "kind": j.kind, "slot": j.slot, "trigger": j.request or j.trigger}
        for j in active
    ]

    # 3. What to start now, per kind.
    created = cond.parse_rfc3339(meta.get("creationTimestamp")) or now
    annotations = meta.get("annotations") or {}
    on_demand = dict(tick.status.get("onDemand") or {})
    history_names = {str(b.get("name")) for b in tick.status.get("backups") or []}
    plans: list[tuple[Kind, CronSchedule | None, str, str, str, bool]] = [
        ("backup", scheds.backup, "lastScheduleTime", BACKUP_NOW, "backup", spec.suspend),
        ("verify", scheds.verify, "lastVerifyScheduleTime", VERIFY_NOW, "verify", spec.suspend),
        (
            "restore-test",
            scheds.restore_test,
            "lastRestoreTestScheduleTime",
            RESTORE_TEST_NOW,
            "restoreTest",
            spec.suspend,
        ),
    ]
    for kind, sched, cursor_key, annotation, od_name, suspended in plans:
        od_key = od_name  # the onDemand key that records the request answered
        request = annotations.get(annotation)
        if kind == "verify" and (not request or request == on_demand.get(od_key)):
            full = lb.storage_full_request(
                tick.status.get("backups") or [], on_demand.get("storageFull")
            )
            if full is not None:  # a full volume: prune now, verify.schedule or not
                request, od_key = full, "storageFull"
        if sched is None and not request:
            continue
        # Verification and restore tests wait for running backups (they read the archives).
        kind_active = [j.name for j in active if j.kind in (kind, "backup")] + draining
        done = history_names | _recorded(tick.status) | set(by_name)  # never start these again
        decision = lb.decide(
            sched or _NEVER,
            name=name,
            kind=kind,
            now=now,
            created=created,
            cursor=cond.parse_rfc3339(tick.status.get(cursor_key)),
            suspend=suspended or sched is None,
            policy=spec.concurrency_policy if kind == "backup" and not draining else "Forbid",
            deadline=spec.deadline,
            active=kind_active,
            done=done,
            request=request,
            handled_request=on_demand.get(od_key),
            answered={j.request for j in jobs if j.kind == kind and j.request},
            defer=held if spec.during_maintenance == "Defer" else None,
        )
        if decision.start is not None and decision.replace:
            # Replace: the old Jobs go now; the new one starts on a later tick, once their
            # pods are gone. Nothing else moves, so that tick decides the same start again.
            for old in decision.replace:
                await _delete_job(kube, ns, old, "Foreground")
                draining.append(old)  # verify and restore tests wait for it too
                active = [j for j in active if j.name != old]
                tick.status["active"] = [a for a in tick.status["active"] if a["name"] != old]
                _record(
                    tick,
                    spec,
                    ns,
                    name,
                    JobView(
                        old,
                        kind,
                        "",
                        "",
                        None,
                        True,
                        False,
                        ("Replaced", f"replaced by {decision.start.name} (concurrencyPolicy)"),
                        "",
                    ),
                    None,
                )
            continue
        if sched is not None:
            if decision.cursor is not None:
                tick.status[cursor_key] = cond.rfc3339(decision.cursor)
            if kind == "backup" and decision.next_run is not None:
                tick.status["nextScheduleTime"] = cond.rfc3339(decision.next_run)
        if decision.missed is not None and decision.missed.missed:
            m = decision.missed
            count = f"{m.missed}{'+' if m.capped else ''}"
            what = (
                "running one catch-up"
                if decision.start
                else "none within startingDeadlineSeconds, skipped"
            )
            tick.status["missedRuns"] = m.missed
            tick.note("Warning", "MissedSchedules", f"{count} {kind} slot(s) missed; {what}")
        if decision.request_taken is not None and decision.start is None:
            on_demand[od_key] = decision.request_taken  # answered by an existing Job
        if decision.start is None:
            continue
        started = await _start(kube, tick, spec, meta, decision.start, decision.request_taken)
        if started:
            if decision.request_taken is not None:
                on_demand[od_key] = decision.request_taken
                if kind == "backup":
                    on_demand["backupJob"] = decision.start.name
            active.append(JobView(decision.start.name, kind, "", "", None, False, False, None, ""))
            tick.status["active"].append(
                {
                    "name": decision.start.name,
                    "kind": kind,
                    "slot": cond.rfc3339(decision.start.slot),
                    "trigger": decision.request_taken or decision.start.trigger,
                }
            )
    if on_demand:
        tick.status["onDemand"] = on_demand

    # 4. Tidy: finished Jobs recorded in an earlier tick beyond the newest few per kind.
    for kind in ("backup", "verify", "restore-test"):
        finished = sorted(
            (j for j in jobs if j.finished and j.kind == kind and recorded_before(j)),
            key=lambda j: (j.created, j.name),
            reverse=True,
        )
        keep = min(KEEP_FINISHED, spec.history_limit) if kind == "backup" else 1
        for j in finished[keep:]:
            await _delete_job(kube, ns, j.name)


_NEVER = CronSchedule.parse("0 0 29 2 *", "UTC")  # placeholder for on-demand-only kinds


def _is_recorded(name: str, kind: str, status: Mapping[str, Any], limit: int) -> bool:
    """Has this finished Job's result been written to status already?

    Job names end in the UTC minute, so within a schedule and kind they sort by time: a
    verify or restore-test Job is recorded if it is not newer than the last one in status;
    a backup Job if it is in the bounded history, or older than all of a full history.
    """
    if kind == "backup":
        names = [str(b.get("name")) for b in status.get("backups") or []]
        if name in names:
            return True
        return len(names) >= limit and bool(names) and name < min(names)
    key = "lastVerification" if kind == "verify" else "lastRestoreTest"
    last = str((status.get(key) or {}).get("job") or "")
    return bool(last) and name <= last


def _recorded(status: Mapping[str, Any]) -> set[str]:
    names = {str(b.get("name")) for b in status.get("backups") or []}
    for key in ("lastVerification", "lastRestoreTest"):
        job = (status.get(key) or {}).get("job")
        if job:
            names.add(str(job))
    return names


async def _pods(
    kube: Kube, ns: str, label: str, jobs: Mapping[str, str]
) -> dict[str, tuple[str, str | None]]:
    """job name -> (pod phase, termination message) for the schedule's pods (one LIST)."""
    listed = await call(
        kube.core.list_namespaced_pod, ns, label_selector=f"{LABEL_SCHEDULE}={label}"
    )
    return pod_results([kube.plain(item) for item in listed.items], jobs)


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
        job = jobs.get(_controller(meta))
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


async def _delete_job(kube: Kube, ns: str, name: str, propagation: str = "Background") -> None:
    try:
        await call(kube.batch.delete_namespaced_job, name, ns, propagation_policy=propagation)
    except ApiException as exc:
        if not is_not_found(exc):
            raise


def _record(
    tick: Tick,
    spec: BackupScheduleSpec,
    ns: str,
    schedule: str,
    job: JobView,
    result: lb.JobResult | None,
) -> None:
    """Put one finished Job's outcome into status, Events and metrics."""
    outcome = "Succeeded" if result is not None and result.ok else "Failed"
    RESULTS.labels(ns, schedule, job.kind, outcome).inc()
    if result is not None and result.data.get("durationSeconds") is not None:
        LAST_DURATION.labels(ns, schedule, job.kind).set(float(result.data["durationSeconds"]))
    failure = job.failure if not job.succeeded else None
    if job.kind == "backup":
        entry = lb.backup_entry(job.name, result, failure)
        entry["trigger"] = job.request or job.trigger or "scheduled"
        history = lb.merge_history(tick.status.get("backups") or [], entry, spec.history_limit)
        if result is not None:
            history = _apply_prune_report(tick, history, result)
        tick.status["backups"] = history
        if entry["result"] == "Succeeded":
            LAST_SUCCESS.labels(ns, schedule).set(
                (cond.parse_rfc3339(entry.get("completedAt")) or cond.utcnow()).timestamp()
            )
            LAST_SIZE.labels(ns, schedule).set(float(entry.get("sizeBytes") or 0))
            tick.note(
                "Normal",
                "BackupSucceeded",
                f"{entry.get('file')}: {entry.get('sizeBytes')} bytes, "
                f"sha256 {str(entry.get('sha256', ''))[:12]}, verified, "
                f"{entry.get('tables')} tables / {entry.get('rows')} rows (Job {job.name})",
            )
            tick.note("Normal", "BackupVerified", f"{entry.get('file')} passed verification")
        else:
            tick.note(
                "Warning",
                str(entry.get("reason") or "BackupFailed"),
                f"backup Job {job.name} failed: {entry.get('message', '')}",
            )
    elif job.kind == "verify":
        data = result.data if result is not None else {}
        failed = {
            str(f.get("file")): (str(f.get("reason")), str(f.get("message", "")))
            for f in data.get("failed") or []
            if isinstance(f, Mapping)
        }
        passed = [str(p) for p in data.get("passed") or []]
        history = lb.apply_verification(
            tick.status.get("backups") or [],
            failed,
            passed,
            [str(p) for p in data.get("pruned") or []],
        )
        tick.status["backups"] = history
        ok_job = result is not None and result.ok
        tick.status["lastVerification"] = {
            "time": str(data.get("completed") or cond.rfc3339(cond.utcnow())),
            "job": job.name,
            "checked": int(data.get("checked") or 0),
            "failed": [f"{f}: {r[0]}" for f, r in failed.items()][:20],
            "result": ("Failed" if failed else "Passed") if ok_job else "Error",
            "message": (
                result.message
                if result is not None and not ok_job
                else (failure[1] if failure and not ok_job else "")
            ),
        }
        for f, (reason, msg) in failed.items():
            tick.note("Warning", "VerificationFailed", f"{f}: {reason}: {msg}")
        if ok_job and not failed:
            tick.note(
                "Normal", "BackupVerified", f"{len(passed)} archive(s) re-verified (Job {job.name})"
            )
        if not ok_job:
            tick.note(
                "Warning",
                "VerificationError",
                f"verify Job {job.name} failed: "
                f"{result.message if result else (failure or ('', ''))[1]}",
            )
        _note_pruned(tick, data)
    else:
        data = result.data if result is not None else {}
        passed_rt = result is not None and result.ok
        record: dict[str, Any] = {
            "time": str(data.get("completed") or cond.rfc3339(cond.utcnow())),
            "job": job.name,
            "result": "Passed" if passed_rt else "Failed",
        }
        for src in (
            "backup",
            "scratchDatabase",
            "durationSeconds",
            "restoreSeconds",
            "tablesCompared",
            "rowsCompared",
        ):
            if data.get(src) is not None:
                record[src] = data[src]
        if not passed_rt:
            record["reason"] = (
                result.reason if result is not None else (failure or ("NoResult", ""))[0]
            )
            record["message"] = (
                result.message
                if result is not None
                else (failure or ("", "the Job ended without a result"))[1]
            )
            tick.note("Warning", "RestoreTestFailed", f"Job {job.name}: {record['message']}")
        else:
            tick.note(
                "Normal",
                "RestoreTestPassed",
                f"{record.get('backup')} restored into {record.get('scratchDatabase')} in "
                f"{record.get('restoreSeconds')}s: {record.get('tablesCompared')} tables, "
                f"{record.get('rowsCompared')} rows match (scratch database dropped)",
            )
        tick.status["lastRestoreTest"] = record


def _apply_prune_report(
    tick: Tick, history: list[dict[str, Any]], result: lb.JobResult
) -> list[dict[str, Any]]:
    data = result.data
    failed = {
        str(f.get("file")): (str(f.get("reason")), str(f.get("message", "")))
        for f in data.get("failed") or []
        if isinstance(f, Mapping)
    }
    for f, (reason, msg) in failed.items():
        tick.note("Warning", "VerificationFailed", f"{f}: {reason}: {msg}")
    _note_pruned(tick, data)
    return lb.apply_verification(history, failed, (), [str(p) for p in data.get("pruned") or []])


def _note_pruned(tick: Tick, data: Mapping[str, Any]) -> None:
    pruned = [str(p) for p in data.get("pruned") or []]
    count = int(data.get("prunedCount") or len(pruned))
    if count:
        shown = ", ".join(pruned[:5]) + (" …" if count > 5 else "")
        tick.note("Normal", "Pruned", f"{count} archive(s) removed by retention: {shown}")
    if data.get("pruneError"):
        tick.note("Warning", "PruneFailed", str(data["pruneError"]))
    held = data.get("retentionHeld")
    if isinstance(held, Mapping):
        tick.note("Warning", "RetentionHeld", f"{held.get('reason')}: {held.get('message')}")


async def _preflight(kube: Kube, ns: str, spec: BackupScheduleSpec) -> tuple[str, str] | None:
    """Problems that would leave a Job's pod stuck: missing Secret (or key), missing PVC."""
    if spec.database.password is not None:
        ref = spec.database.password.secret_key_ref
        try:
            await read_secret_key(kube, ns, ref.name, ref.key)  # value discarded at once
        except LookupError as exc:
            return "SecretMissing", str(exc)
    try:
        pvc = await call(
            kube.core.read_namespaced_persistent_volume_claim, spec.storage.claim_name, ns
        )
    except ApiException as exc:
        if is_not_found(exc):
            return (
                "StorageMissing",
                f"PersistentVolumeClaim {ns}/{spec.storage.claim_name} not found",
            )
        if exc.status == 403:
            return (
                "StorageMissing",
                f"PersistentVolumeClaim {ns}/{spec.storage.claim_name}: access denied",
            )
        raise
    phase = getattr(pvc.status, "phase", None)
    if phase == "Lost":
        return "StorageMissing", f"PersistentVolumeClaim {ns}/{spec.storage.claim_name} is Lost"
    return None


async def _start(
    kube: Kube,
    tick: Tick,
    spec: BackupScheduleSpec,
    meta: Mapping[str, Any],
    start: lb.Start,
    request: str | None,
) -> bool:
    """Create the Job (adopting an existing one); a blocked start is recorded as failed."""
    ns, schedule = meta["namespace"], meta["name"]
    problem = await _preflight(kube, ns, spec)
    if problem is not None:
        blocked = JobView(
            start.name,
            start.kind,
            cond.rfc3339(start.slot),
            start.trigger,
            request,
            True,
            False,
            problem,
            "",
        )
        # Recorded like a failed run of this slot: the condition names the problem, an Event
        # says it once, and the slot is not retried every tick.
        _record(tick, spec, ns, schedule, blocked, None)
        return False
    history = tick.status.get("backups") or []
    owner = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "BackupSchedule", "metadata": meta}
    # The Job mounts the schedule's program ConfigMap: make it hold this release's program.
    if await ensure_configmap(kube, program_configmap(owner), ANNOTATION_PROGRAM) == "updated":
        tick.note("Normal", "ProgramUpdated", "the backup program ConfigMap was updated")
    manifest = backup_job(
        owner=owner,
        job_name=start.name,
        kind=start.kind,
        spec=spec,
        slot=start.slot,
        trigger=start.trigger,
        protected=lb.protected_files(history, spec.retention.min_keep),
        restore_file=lb.newest_verified(history) if start.kind == "restore-test" else None,
    )
    if request is not None:
        manifest["metadata"]["annotations"][ANNOTATION_REQUEST] = request
    try:
        await call(kube.batch.create_namespaced_job, ns, manifest)
    except ApiException as exc:
        if not is_conflict(exc):
            raise
        return await _adopt(kube, tick, spec, meta, start, request)
    what = {"backup": "Backup", "verify": "Verification", "restore-test": "RestoreTest"}
    tick.note(
        "Normal",
        f"{what[start.kind]}Started",
        f"Job {start.name} ({start.trigger}{', request ' + request if request else ''})",
    )
    return True


async def _adopt(
    kube: Kube,
    tick: Tick,
    spec: BackupScheduleSpec,
    meta: Mapping[str, Any],
    start: lb.Start,
    request: str | None,
) -> bool:
    """A 409 on create: adopt the Job if this schedule owns it, else record the run skipped."""
    ns, schedule = meta["namespace"], meta["name"]
    existing = kube.plain(await call(kube.batch.read_namespaced_job, start.name, ns))
    owners = (existing.get("metadata") or {}).get("ownerReferences") or []
    if any(o.get("uid") == meta.get("uid") for o in owners):
        return True  # created by an earlier run of this tick: adopt it
    # Someone else's Job holds the name: never adopt (or report) it; say so once.
    taken = JobView(
        start.name,
        start.kind,
        cond.rfc3339(start.slot),
        start.trigger,
        request,
        True,
        False,
        (
            "JobNameTaken",
            f"a Job named {start.name} exists that this BackupSchedule does not own; "
            "this run was skipped",
        ),
        "",
    )
    _record(tick, spec, ns, schedule, taken, None)
    return False
