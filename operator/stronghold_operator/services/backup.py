"""BackupSchedule service: observe the schedule's Jobs, decide (logic/backup.py), act, report.

A pass reads the schedule's Jobs and their pods, records the results of finished ones (from
the pods' termination messages), asks :func:`stronghold_operator.logic.backup.decide` what
to start per kind (backup, verify, restore test), creates Jobs with deterministic names (a
name already taken is adopted when this schedule owns that Job), removes old finished
Jobs, and returns the typed status, the Events and the recorded results. Nothing is kept
between passes: after a restart the next pass sees the same Jobs and status and carries on.

I/O happens only through the ports below; platforms/backup.py implements them for
Kubernetes, unit tests use in-memory fakes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from stronghold_operator import conditions as cond
from stronghold_operator.builders.backup_job import backup_job
from stronghold_operator.builders.backup_program import ANNOTATION_PROGRAM, program_configmap
from stronghold_operator.builders.backup_sources import capture_configmap, with_sources
from stronghold_operator.logic import backup as lb
from stronghold_operator.logic.backup_offsite import offsite_condition
from stronghold_operator.logic.backup_results import (
    ANNOTATION_REQUEST,
    Event,
    Failure,
    Finished,
    JobView,
    Report,
    is_recorded,
    pod_results,
    record,
    recorded,
)
from stronghold_operator.logic.cron import CronSchedule
from stronghold_operator.models.backup import (
    BACKUP_NOW,
    RESTORE_TEST_NOW,
    VERIFY_NOW,
    BackupScheduleSpec,
    BackupScheduleStatus,
    check_restricted,
)
from stronghold_operator.models.base import parse
from stronghold_operator.models.status import Condition
from stronghold_operator.services import backup_sources

# Finished Jobs kept per kind after their result is in status (for `kubectl logs`).
KEEP_FINISHED = 3
_NEVER = CronSchedule.parse("0 0 29 2 *", "UTC")  # placeholder for on-demand-only kinds

# --- Ports ---------------------------------------------------------------------------------


class Jobs(Protocol):
    """The schedule's Jobs (those carrying its label; the pass checks who controls them)."""

    async def list(self) -> list[Mapping[str, Any]]: ...
    async def create(self, manifest: Mapping[str, Any]) -> bool:
        """Create the Job; False when a Job of that name exists already."""
        ...

    async def read(self, name: str) -> Mapping[str, Any]: ...
    async def delete(self, name: str, *, foreground: bool = False) -> None:
        """Delete the Job (a Job already gone is fine); ``foreground``: its pods first."""
        ...


class Pods(Protocol):
    """The pods carrying the schedule's label."""

    async def list(self) -> list[Mapping[str, Any]]: ...


class Program(Protocol):
    """The ConfigMap holding the Job program the Jobs mount."""

    async def ensure(self, manifest: Mapping[str, Any], version_key: str) -> str:
        """Create it, or bring it up to date (``version_key``: the annotation naming the
        program's version); returns "created", "updated" or "kept"."""
        ...


class Preflight(Protocol):
    """What would leave a Job's pod stuck: a missing Secret (or key), a missing PVC."""

    async def problem(self, spec: BackupScheduleSpec) -> Failure | None: ...


@dataclass(frozen=True)
class Ports:
    jobs: Jobs
    pods: Pods
    program: Program
    preflight: Preflight
    clock: Callable[[], datetime]
    maintenance: Callable[[], str | None]  # the windows (or humans) holding the schedule now
    sources: backup_sources.Sources | None = None  # spec.sources' capture (configuration, state)


# --- Results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pass:
    """One pass: the status to write, the Events to send, the Jobs recorded (metrics)."""

    status: BackupScheduleStatus
    now: datetime
    events: list[Event] = field(default_factory=list)
    finished: list[Finished] = field(default_factory=list)
    busy: bool = False  # Jobs run or are being deleted: look again soon
    next_slot: datetime | None = None  # the earliest next scheduled run of any kind


@dataclass(frozen=True)
class Compiled:
    spec: BackupScheduleSpec
    schedules: lb.Schedules


def compile_spec(raw: Mapping[str, Any], allowed: Collection[str]) -> Compiled:
    """Parse the spec and its cron expressions; :class:`InvalidSpec` names what is wrong.

    ``allowed`` are the privileged jobTemplate fields the cluster admin allows.
    """
    spec = parse(BackupScheduleSpec, raw)
    schedules = lb.compile_schedules(spec)
    check_restricted(spec.job_template, allowed)
    return Compiled(spec, schedules)


def _conditions(updates: Collection[cond.Condition]) -> list[Condition]:
    return [
        Condition(type=c.type, status=c.status, reason=c.reason, message=c.message) for c in updates
    ]


def conditions_only(updates: Collection[cond.Condition]) -> BackupScheduleStatus:
    """A status that sets only these conditions (the rest of status is left alone)."""
    return BackupScheduleStatus(conditions=_conditions(updates))


def initial_status() -> BackupScheduleStatus:
    """Every condition Unknown: the first sight of a schedule."""
    return conditions_only(cond.unknown_all(lb.CONDITION_TYPES))


# --- The pass ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """One kind of Job a schedule runs: its cron, status cursor, request annotation."""

    name: lb.JobKind
    cursor_key: str
    annotation: str
    od_key: str  # the onDemand key recording the request answered

    def schedule(self, schedules: lb.Schedules) -> CronSchedule | None:
        return {
            "backup": schedules.backup,
            "verify": schedules.verify,
            "restore-test": schedules.restore_test,
        }[self.name]


KINDS = (
    Kind("backup", "lastScheduleTime", BACKUP_NOW, "backup"),
    Kind("verify", "lastVerifyScheduleTime", VERIFY_NOW, "verify"),
    Kind("restore-test", "lastRestoreTestScheduleTime", RESTORE_TEST_NOW, "restoreTest"),
)


@dataclass
class _Run:
    """What one pass works with; ``report.status`` is the status being built."""

    spec: BackupScheduleSpec
    schedules: lb.Schedules
    meta: Mapping[str, Any]
    ports: Ports
    report: Report
    held: str | None
    jobs: list[JobView]  # ours, not being deleted
    draining: list[str]  # our backup Jobs being deleted (their pods may still run)
    active: list[JobView] = field(default_factory=list)
    on_demand: dict[str, Any] = field(default_factory=dict)
    history: set[str] = field(default_factory=set)  # Job names in status.backups
    next_runs: list[datetime] = field(default_factory=list)


async def reconcile(
    compiled: Compiled, meta: Mapping[str, Any], ports: Ports, current: Mapping[str, Any]
) -> Pass:
    """One pass; ``current`` is the status as it stands."""
    now = ports.clock()
    owned = await observe(ports, str(meta.get("uid") or ""))
    run = _Run(
        compiled.spec,
        compiled.schedules,
        meta,
        ports,
        Report(copy.deepcopy(dict(current)), now),
        ports.maintenance(),
        jobs=[v for v in owned if not v.deleting],
        # A Job being deleted (replaced) is neither running nor a result to record; until its
        # pods are gone (Foreground deletion) no new backup starts, so two dumps never overlap.
        draining=[v.name for v in owned if v.deleting and v.kind == "backup"],
    )
    before = copy.deepcopy(run.report.status)
    record_results(run.report, compiled.spec.history_limit, run.jobs)
    run.active = [j for j in run.jobs if not j.finished]
    run.report.status["active"] = [_active_entry(j) for j in run.active]
    run.on_demand = dict(run.report.status.get("onDemand") or {})
    run.history = {str(b.get("name")) for b in run.report.status.get("backups") or []}
    for kind in KINDS:
        await _handle_kind(run, kind)
    if run.on_demand:
        run.report.status["onDemand"] = run.on_demand
    await _tidy(run, before)
    return Pass(
        status=desired_status(run, current),
        now=now,
        events=run.report.events,
        finished=run.report.finished,
        busy=bool(run.active or run.draining),
        next_slot=min(run.next_runs, default=None),
    )


async def observe(ports: Ports, uid: str) -> list[JobView]:
    """The Jobs this schedule controls, a terminated pod standing for its Job's outcome."""
    # Only Jobs this schedule controls: anyone who can create Jobs or pods in the namespace
    # can copy our labels, and their results must not become this schedule's status.
    owned = [v for v in map(JobView.of, await ports.jobs.list()) if v.controller == uid]
    pods = pod_results(await ports.pods.list(), {v.uid: v.name for v in owned if v.uid})
    for job in owned:
        pod = pods.get(job.name)
        job.message = pod[1] if pod is not None else None
        # The Job controller can lag well behind its pod on a busy node; with backoffLimit 0 a
        # terminated pod is the Job's outcome, so do not report it as running meanwhile.
        if job.deleting or job.finished or pod is None or pod[0] not in ("Succeeded", "Failed"):
            continue
        job.finished, job.succeeded = True, pod[0] == "Succeeded"
        if not job.succeeded:
            job.failure = ("PodFailed", "the backup container exited with an error")
    return owned


def record_results(report: Report, limit: int, jobs: Collection[JobView]) -> None:
    """Record the finished Jobs not in status yet (oldest first), and the ones that vanished."""
    created = {j.name: j.created for j in jobs if j.created}
    for job in sorted(jobs, key=lambda j: (j.created, j.name)):
        if job.finished and not is_recorded(job.name, job.kind, report.status, limit, created):
            record(report, limit, job, lb.parse_result(job.message))
    # Jobs status says were running but that are gone: never leave them "running".
    names = {j.name for j in jobs}
    for entry in report.status.get("active") or []:
        name, kind = str(entry.get("name", "")), str(entry.get("kind") or "backup")
        if name and name not in names and not is_recorded(name, kind, report.status, limit):
            gone = JobView(
                name,
                kind,
                slot=str(entry.get("slot") or ""),
                trigger=str(entry.get("trigger") or ""),
                finished=True,
                failure=("JobVanished", "the Job was deleted before its result was recorded"),
            )
            record(report, limit, gone, None)


def _active_entry(job: JobView) -> dict[str, Any]:
    return {
        "name": job.name,
        "kind": job.kind,
        "slot": job.slot,
        "trigger": job.request or job.trigger,
    }


def _request(run: _Run, kind: Kind) -> tuple[str | None, str]:
    """The on-demand request to answer for ``kind`` now, and the onDemand key it goes under."""
    request = (run.meta.get("annotations") or {}).get(kind.annotation)
    if kind.name == "verify" and (not request or request == run.on_demand.get(kind.od_key)):
        full = lb.storage_full_request(
            run.report.status.get("backups") or [], run.on_demand.get("storageFull")
        )
        if full is not None:  # a full volume: prune now, verify.schedule or not
            return full, "storageFull"
    return request, kind.od_key


def _decide(
    run: _Run, kind: Kind, sched: CronSchedule | None, request: str | None, od_key: str
) -> lb.Decision:
    spec, status = run.spec, run.report.status
    # Verification and restore tests wait for running backups (they read the archives).
    busy = [j.name for j in run.active if j.kind in (kind.name, "backup")] + run.draining
    return lb.decide(
        sched or _NEVER,
        name=str(run.meta["name"]),
        kind=kind.name,
        now=run.report.now,
        created=cond.parse_rfc3339(run.meta.get("creationTimestamp")) or run.report.now,
        cursor=cond.parse_rfc3339(status.get(kind.cursor_key)),
        suspend=spec.suspend or sched is None,
        policy=spec.concurrency_policy if kind.name == "backup" and not run.draining else "Forbid",
        deadline=spec.deadline,
        active=busy,
        # Never start these again.
        done=run.history | recorded(status) | {j.name for j in run.jobs},
        request=request,
        handled_request=run.on_demand.get(od_key),
        answered={j.request for j in run.jobs if j.kind == kind.name and j.request},
        defer=run.held if spec.during_maintenance == "Defer" else None,
    )


async def _handle_kind(run: _Run, kind: Kind) -> None:
    """Decide about one kind and act: replace, start, or note why nothing starts."""
    sched = kind.schedule(run.schedules)
    request, od_key = _request(run, kind)
    if sched is None and not request:
        return
    decision = _decide(run, kind, sched, request, od_key)
    if decision.start is not None and decision.replace:
        await _replace(run, kind, decision.start, decision.replace)
        return
    if sched is not None:
        _advance(run, kind, decision)
    _note_missed(run, kind, decision)
    if decision.request_taken is not None and decision.start is None:
        run.on_demand[od_key] = decision.request_taken  # answered by an existing Job
    if decision.start is None:
        return
    if await _start(run, decision.start, decision.request_taken):
        if decision.request_taken is not None:
            run.on_demand[od_key] = decision.request_taken
            if kind.name == "backup":
                run.on_demand["backupJob"] = decision.start.name
        started = JobView(decision.start.name, kind.name, request=decision.request_taken)
        started.slot, started.trigger = cond.rfc3339(decision.start.slot), decision.start.trigger
        run.active.append(started)
        run.report.status["active"].append(_active_entry(started))


def _advance(run: _Run, kind: Kind, decision: lb.Decision) -> None:
    """Move the kind's cursor; the backup's next run is status.nextScheduleTime."""
    if decision.cursor is not None:
        run.report.status[kind.cursor_key] = cond.rfc3339(decision.cursor)
    if decision.next_run is not None:
        run.next_runs.append(decision.next_run)
        if kind.name == "backup":
            run.report.status["nextScheduleTime"] = cond.rfc3339(decision.next_run)


def _note_missed(run: _Run, kind: Kind, decision: lb.Decision) -> None:
    m = decision.missed
    if m is None or not m.missed:
        return
    count = f"{m.missed}{'+' if m.capped else ''}"
    what = (
        "running one catch-up" if decision.start else "none within startingDeadlineSeconds, skipped"
    )
    run.report.status["missedRuns"] = m.missed
    run.report.note("Warning", "MissedSchedules", f"{count} {kind.name} slot(s) missed; {what}")


async def _replace(run: _Run, kind: Kind, start: lb.Start, old_jobs: Collection[str]) -> None:
    """Replace: the old Jobs go now; the new one starts on a later pass, once their pods
    are gone. Nothing else moves, so that pass decides the same start again."""
    for old in old_jobs:
        await run.ports.jobs.delete(old, foreground=True)
        run.draining.append(old)  # verify and restore tests wait for it too
        run.active = [j for j in run.active if j.name != old]
        run.report.status["active"] = [a for a in run.report.status["active"] if a["name"] != old]
        replaced = ("Replaced", f"replaced by {start.name} (concurrencyPolicy)")
        gone = JobView(old, kind.name, finished=True, failure=replaced)
        record(run.report, run.spec.history_limit, gone, None)


_STARTED = {"backup": "Backup", "verify": "Verification", "restore-test": "RestoreTest"}


async def _start(run: _Run, start: lb.Start, request: str | None) -> bool:
    """Create the Job (adopting our own of that name); a blocked start is recorded failed."""
    problem = await run.ports.preflight.problem(run.spec)
    if problem is not None:
        # Recorded like a failed run of this slot: the condition names the problem, an Event
        # says it once, and the slot is not retried every pass.
        _skip(run, JobView.failed(start, request, problem))
        return False
    owner: dict[str, Any] = {"kind": "BackupSchedule", "metadata": run.meta}
    # The Job mounts the schedule's program ConfigMap: make it hold this release's program.
    if await run.ports.program.ensure(program_configmap(owner), ANNOTATION_PROGRAM) == "updated":
        run.report.note("Normal", "ProgramUpdated", "the backup program ConfigMap was updated")
    history = run.report.status.get("backups") or []
    manifest = backup_job(
        owner=owner,
        job_name=start.name,
        kind=start.kind,
        spec=run.spec,
        slot=start.slot,
        trigger=start.trigger,
        protected=lb.protected_files(history, run.spec.retention.min_keep),
        restore_file=lb.newest_verified(history) if start.kind == "restore-test" else None,
    )
    if request is not None:
        manifest["metadata"]["annotations"][ANNOTATION_REQUEST] = request
    files: dict[str, bytes] | None = None
    if start.kind == "backup":
        manifest = with_sources(manifest, run.spec)
        captured = await _capture(run)
        if isinstance(captured, tuple):
            _skip(run, JobView.failed(start, request, captured))
            return False
        files = captured
    if not await run.ports.jobs.create(manifest):
        adopted = await _adopt(run, start, request)
        if adopted and files is not None:
            await _put_capture(run, start.name, files)
        return adopted
    if files is not None:
        try:
            await _put_capture(run, start.name, files)
        except Exception:
            # Without its capture the pod would wait for the volume until the deadline: the
            # Job goes, the pass fails, and the next pass starts the run again.
            await run.ports.jobs.delete(start.name)
            raise
    via = f", request {request}" if request else ""
    run.report.note(
        "Normal", f"{_STARTED[start.kind]}Started", f"Job {start.name} ({start.trigger}{via})"
    )
    return True


async def _capture(run: _Run) -> dict[str, bytes] | Failure | None:
    """The run's capture files (None: nothing to capture), or why the run cannot start."""
    src = run.ports.sources
    if not run.spec.sources.captured or src is None:
        return None
    got = await backup_sources.capture(run.spec, str(run.meta["namespace"]), src, run.report.now)
    return got if isinstance(got, tuple) else got.files


async def _put_capture(run: _Run, job_name: str, files: dict[str, bytes]) -> None:
    """The capture ConfigMap, owned by the Job (its pod waits for it to mount)."""
    assert run.ports.sources is not None
    job = await run.ports.jobs.read(job_name)
    await run.ports.sources.put_capture(capture_configmap(job, files))


async def _adopt(run: _Run, start: lb.Start, request: str | None) -> bool:
    """The name is taken: adopt the Job if this schedule owns it, else record the run skipped."""
    existing = await run.ports.jobs.read(start.name)
    owners = (existing.get("metadata") or {}).get("ownerReferences") or []
    if any(o.get("uid") == run.meta.get("uid") for o in owners):
        return True  # created by an earlier pass: adopt it
    # Someone else's Job holds the name: never adopt (or report) it; say so once.
    taken = (
        "JobNameTaken",
        f"a Job named {start.name} exists that this BackupSchedule does not own; "
        "this run was skipped",
    )
    _skip(run, JobView.failed(start, request, taken))
    return False


def _skip(run: _Run, job: JobView) -> None:
    record(run.report, run.spec.history_limit, job, None)


async def _tidy(run: _Run, before: Mapping[str, Any]) -> None:
    """Delete finished Jobs recorded in an earlier pass beyond the newest few per kind."""
    limit = run.spec.history_limit
    created = {j.name: j.created for j in run.jobs if j.created}
    for kind in KINDS:
        finished = sorted(
            (
                j
                for j in run.jobs
                if j.finished
                and j.kind == kind.name
                and is_recorded(j.name, j.kind, before, limit, created)
            ),
            key=lambda j: (j.created, j.name),
            reverse=True,
        )
        keep = min(KEEP_FINISHED, limit) if kind.name == "backup" else 1
        for j in finished[keep:]:
            await run.ports.jobs.delete(j.name)


# --- Status --------------------------------------------------------------------------------


def desired_status(run: _Run, current: Mapping[str, Any]) -> BackupScheduleStatus:
    """The status to write: what the pass built, its conditions and summary times."""
    status = run.report.status
    rt_on = run.schedules.restore_test is not None
    conds, last_verified = lb.summarize(
        status.get("backups") or [],
        status.get("lastRestoreTest"),
        rt_on or bool(status.get("lastRestoreTest")),
        cond.parse_rfc3339(run.meta.get("creationTimestamp")) or run.report.now,
        run.report.now,
        run.spec.stale_after,
    )
    fields = {k: v for k, v in status.items() if k not in ("conditions", "observedGeneration")}
    good = [b for b in status.get("backups") or [] if b.get("result") == "Succeeded"]
    if good and good[0].get("completedAt"):
        fields["lastSuccessfulTime"] = good[0]["completedAt"]
    if last_verified is not None:
        fields["lastVerifiedTime"] = cond.rfc3339(last_verified)
    backups = status.get("backups") or []
    if run.spec.offsite is not None or any(b.get("offsite") for b in backups):
        conds.append(offsite_condition(backups))
    out = BackupScheduleStatus.model_validate(fields)
    out.conditions = _conditions(conds)
    return out
