"""Level-triggered state of a maintenance window: from the clock, the spec and the status.

The handler calls :func:`decide` on every tick with what is recorded in status
(``status.currentWindow`` as :class:`Progress`, ``status.history``) and the manual requests
it has not handled yet. The result says what should be true now (targets frozen or not),
which step to run (pre-checks, post-checks) and what to record. Every step's progress lives
in status, so after an operator restart the same decision comes out: frozen targets stay
frozen, and pre/post steps never run twice for one window (a window whose id is in the
history is never begun again).

Life of one occurrence (no ``phase`` field: conditions tell the story)::

    begin (leadTime before start) -> pre-checks -> open (frozen) -> end -> post-checks -> history
                                               \\-> skipped (pre-checks failed, policy Skip)
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal
from zoneinfo import ZoneInfo

from stronghold_operator import conditions as cond
from stronghold_operator.logic.recurrence import Occurrence, Recurrence
from stronghold_operator.models.base import format_duration, parse_duration
from stronghold_operator.models.maintenance import (
    ACTIVE,
    MAX_DURATION,
    MIN_DURATION,
    POST_CHECKS_PASSED,
    PRE_CHECKS_PASSED,
    SCHEDULED,
    SKIP_ANNOTATION,
    START_NOW_DURATION_ANNOTATION,
    VOCABULARY,
    MaintenanceWindowSpec,
    clean,
)

__all__ = [
    "ACTIVE",
    "CONDITION_TYPES",
    "POST_CHECKS_PASSED",
    "PRE_CHECKS_PASSED",
    "SCHEDULED",
    "Decision",
    "Event",
    "HistoryEntry",
    "Manual",
    "Progress",
    "Stage",
    "StartNow",
    "backup_request_value",
    "clean",
    "decide",
    "window_times",
]

# The condition types live with the status model (models/maintenance.VOCABULARY).
CONDITION_TYPES = VOCABULARY.types

StepState = Literal["Pending", "Running", "Passed", "Failed", "NotRequired"]
EndReason = Literal["Scheduled", "EndNow", "SkipRequested"]
Result = Literal["Succeeded", "Failed", "Skipped"]


class Stage(StrEnum):
    """Where the window is; internal to the decision (never written as a status phase)."""

    IDLE = "Idle"  # nothing in progress
    WAITING = "Waiting"  # an occurrence is begun but nothing is due yet
    PRE_CHECKS = "PreChecks"  # pre-checks running (before or at the start)
    OPEN = "Open"  # covered objects frozen
    SKIPPED = "Skipped"  # pre-checks failed and the policy is Skip: nothing frozen
    POST_CHECKS = "PostChecks"  # released; post-checks running


def _ts(t: datetime | None) -> str | None:
    return cond.rfc3339(t) if t is not None else None


def _local(t: datetime, tz: ZoneInfo) -> str:
    return t.astimezone(tz).isoformat(timespec="seconds")


def window_times(occ: Occurrence, tz: ZoneInfo) -> dict[str, str]:
    """``{start, end, startLocal, endLocal}`` as status shows a window."""
    return {
        "start": cond.rfc3339(occ.start),
        "end": cond.rfc3339(occ.end),
        "startLocal": _local(occ.start, tz),
        "endLocal": _local(occ.end, tz),
    }


@dataclass(frozen=True)
class Progress:
    """``status.currentWindow``: one occurrence and every step done for it."""

    id: str
    start: datetime
    end: datetime
    pre_checks: StepState = "Pending"
    pre_checks_started: datetime | None = None
    pre_checks_message: str = ""
    attempt: int = 1  # pre-check attempts (precheck-now may re-run them before the start)
    manual: bool = False  # this attempt was requested with the precheck-now annotation
    backup_request: str | None = None  # the backup-now value written for this attempt
    backup_requested_at: datetime | None = None
    backup: str | None = None  # the verified backup the window relies on
    snapshot: str | None = None  # the snapshot ConfigMap's name
    opened_at: datetime | None = None  # when covered objects were first frozen
    skipped: bool = False
    ended_at: datetime | None = None
    end_reason: EndReason | None = None
    post_checks: StepState = "Pending"
    post_checks_started: datetime | None = None
    post_checks_message: str = ""
    trigger: str | None = None  # the start-now value of an on-demand window

    @classmethod
    def begin(cls, occ: Occurrence) -> Progress:
        return cls(id=occ.id, start=occ.start, end=occ.end)

    @property
    def occurrence(self) -> Occurrence:
        return Occurrence(self.start, self.end)

    @property
    def ended(self) -> bool:
        return self.ended_at is not None

    def to_status(self, tz: ZoneInfo) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, **window_times(self.occurrence, tz)}
        out["trigger"] = self.trigger
        out["preChecks"] = {
            "state": self.pre_checks,
            "attempt": self.attempt,
            "manual": self.manual,
            "startedAt": _ts(self.pre_checks_started),
            "message": self.pre_checks_message,
            "backupRequest": self.backup_request,
            "backupRequestedAt": _ts(self.backup_requested_at),
            "backup": self.backup,
        }
        out["snapshotConfigMap"] = self.snapshot
        out["openedAt"] = _ts(self.opened_at)
        out["skipped"] = self.skipped
        out["endedAt"] = _ts(self.ended_at)
        out["endReason"] = self.end_reason
        out["postChecks"] = {
            "state": self.post_checks,
            "startedAt": _ts(self.post_checks_started),
            "message": self.post_checks_message,
        }
        return _drop_none(out)

    @classmethod
    def from_status(cls, data: Mapping[str, Any] | None) -> Progress | None:
        """Read back what :meth:`to_status` wrote; None when absent or unreadable."""
        if not data or not data.get("id") or not data.get("start") or not data.get("end"):
            return None
        pre = data.get("preChecks") or {}
        post = data.get("postChecks") or {}
        start, end = cond.parse_rfc3339(data["start"]), cond.parse_rfc3339(data["end"])
        assert start is not None and end is not None
        return cls(
            id=str(data["id"]),
            start=start,
            end=end,
            pre_checks=pre.get("state", "Pending"),
            pre_checks_started=cond.parse_rfc3339(pre.get("startedAt")),
            pre_checks_message=str(pre.get("message", "")),
            attempt=int(pre.get("attempt", 1)),
            manual=bool(pre.get("manual", False)),
            backup_request=pre.get("backupRequest"),
            backup_requested_at=cond.parse_rfc3339(pre.get("backupRequestedAt")),
            backup=pre.get("backup"),
            snapshot=data.get("snapshotConfigMap"),
            opened_at=cond.parse_rfc3339(data.get("openedAt")),
            skipped=bool(data.get("skipped", False)),
            ended_at=cond.parse_rfc3339(data.get("endedAt")),
            end_reason=data.get("endReason"),
            post_checks=post.get("state", "Pending"),
            post_checks_started=cond.parse_rfc3339(post.get("startedAt")),
            post_checks_message=str(post.get("message", "")),
            trigger=data.get("trigger"),
        )


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    """Leave out None and "" (a merge patch on Kubernetes 1.20 turns "" into null, which the
    schema refuses for a string field)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        value = _drop_none(v) if isinstance(v, dict) else v
        if value is not None and value != "":
            out[k] = value
    return out


@dataclass(frozen=True)
class HistoryEntry:
    """One finished window in ``status.history`` (newest first, bounded)."""

    id: str
    start: datetime
    end: datetime
    ended_at: datetime
    end_reason: str
    pre_checks: str
    post_checks: str
    result: Result
    backup: str | None = None
    snapshot: str | None = None
    message: str = ""
    trigger: str | None = None  # the start-now value of an on-demand window

    def to_status(self) -> dict[str, Any]:
        return _drop_none(
            {
                "id": self.id,
                "trigger": self.trigger,
                "start": cond.rfc3339(self.start),
                "end": cond.rfc3339(self.end),
                "endedAt": cond.rfc3339(self.ended_at),
                "endReason": self.end_reason,
                "preChecks": self.pre_checks,
                "postChecks": self.post_checks,
                "result": self.result,
                "backup": self.backup,
                "snapshotConfigMap": self.snapshot,
                "message": self.message,
            }
        )

    @classmethod
    def from_status(cls, data: Mapping[str, Any]) -> HistoryEntry:
        start, end = cond.parse_rfc3339(data.get("start")), cond.parse_rfc3339(data.get("end"))
        ended = cond.parse_rfc3339(data.get("endedAt")) or end
        assert start is not None and end is not None and ended is not None
        return cls(
            id=str(data.get("id", "")),
            start=start,
            end=end,
            ended_at=ended,
            end_reason=str(data.get("endReason", "Scheduled")),
            pre_checks=str(data.get("preChecks", "")),
            post_checks=str(data.get("postChecks", "")),
            result=data.get("result", "Failed"),
            backup=data.get("backup"),
            snapshot=data.get("snapshotConfigMap"),
            message=str(data.get("message", "")),
            trigger=data.get("trigger"),
        )


def history_from_status(items: Sequence[Mapping[str, Any]] | None) -> list[HistoryEntry]:
    out = []
    for item in items or ():
        try:
            out.append(HistoryEntry.from_status(item))
        except (AssertionError, ValueError, TypeError):
            continue  # an entry edited by hand into nonsense is dropped, not fatal
    return out


@dataclass(frozen=True)
class StartNow:
    """A start-now request: its annotation value and the start-now-duration, if any."""

    value: str
    duration: str | None = None


@dataclass(frozen=True)
class Manual:
    """Manual requests not handled yet (the handler compares annotation values with status).

    ``skip`` says the skip annotation has a value not seen before (its Event is due); what it
    skips is decided from the annotation itself on every pass (``decide(skip=...)``).
    """

    end_now: bool = False
    precheck_now: bool = False
    start_now: StartNow | None = None
    skip: bool = False


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    """What should be true now, and what to record."""

    stage: Stage
    progress: Progress | None  # the new status.currentWindow (None: nothing in progress)
    freeze: bool  # covered objects should carry this window's name now
    run_pre_checks: bool
    run_post_checks: bool
    finished: HistoryEntry | None  # an occurrence completed now: prepend to history
    next_window: Occurrence | None
    events: tuple[Event, ...] = ()
    conditions: tuple[cond.Condition, ...] = ()
    wake_at: datetime | None = None  # the next instant at which the decision changes by itself
    skipping: Occurrence | None = None  # a scheduled window the skip annotation cancels
    skip_finished: HistoryEntry | None = None  # that window, recorded now its start is here

    @property
    def settled(self) -> bool:
        """Nothing left to do this tick except holding the freeze state."""
        return not (
            self.run_pre_checks or self.run_post_checks or self.finished or self.skip_finished
        )


def backup_request_value(window: str, progress: Progress) -> str:
    """The backup-now annotation value for one pre-check attempt: deterministic, so a retry
    after a failed status write (or a restart) writes the same value and no second backup runs.
    """
    suffix = f"-{progress.attempt}" if progress.attempt > 1 else ""
    return f"{window}-{progress.id}{suffix}"


def _pre_required(spec: MaintenanceWindowSpec) -> bool:
    return spec.pre_checks.backup is not None or spec.pre_checks.snapshot


def _result(p: Progress) -> Result:
    if p.opened_at is None:
        return "Skipped"
    if p.pre_checks == "Failed" or p.post_checks == "Failed":
        return "Failed"
    return "Succeeded"


def _finish(p: Progress) -> HistoryEntry:
    assert p.ended_at is not None
    msg = p.post_checks_message if p.opened_at is not None else p.pre_checks_message
    if p.opened_at is None and p.end_reason == "EndNow" and not p.skipped:
        msg = "ended by request before it opened"
    return HistoryEntry(
        id=p.id,
        start=p.start,
        end=p.end,
        ended_at=p.ended_at,
        end_reason=p.end_reason or "Scheduled",
        pre_checks=p.pre_checks,
        post_checks=p.post_checks if p.opened_at is not None else "NotRun",
        result=_result(p),
        backup=p.backup,
        snapshot=p.snapshot,
        message=msg,
        trigger=p.trigger,
    )


def _to_begin(
    rec: Recurrence,
    spec: MaintenanceWindowSpec,
    now: datetime,
    done: set[str],
    upcoming: Occurrence | None,
    skipping: Occurrence | None = None,
) -> Occurrence | None:
    """The occurrence to start working on now, if any (never one already in history, nor
    the one being skipped)."""
    if spec.suspend:
        return None
    cur = rec.current(now)
    if cur is not None and cur.id not in done and cur != skipping:
        return cur
    if (
        upcoming is not None
        and upcoming.id not in done
        and now >= upcoming.start - _lead_time(spec)
    ):
        return upcoming
    return None


def decide(
    spec: MaintenanceWindowSpec,
    rec: Recurrence,
    now: datetime,
    progress: Progress | None,
    history: Sequence[HistoryEntry] = (),
    manual: Manual = Manual(),
    window_name: str = "",
    skip: str | None = None,
) -> Decision:
    """The state the window should be in at ``now``. Pure; call again after each step.

    The skip annotation (``skip``, level-triggered) first, then the requests (precheck-now,
    start-now, end-now), then begin an occurrence if none is in progress, then one step of
    the life of the occurrence: before its end or after it.
    """
    now = now.astimezone(UTC)
    tz = rec.tz
    done = {h.id for h in history}
    lead = _lead_time(spec)
    skipped = _apply_skip(rec, now, _follow_spec_edit(rec, progress), done, skip, manual.skip)
    if skipped.finished is not None:
        done.add(skipped.finished.id)
    upcoming = _next_window(rec, now, done, skipped.skipping)
    p, events = _requests(rec, now, skipped.progress, manual, done, upcoming)
    events[:0] = skipped.events
    if p is None and (occ := _to_begin(rec, spec, now, done, upcoming, skipped.skipping)):
        p = Progress.begin(occ)
        events.append(_scheduled_event(occ, tz))
    step = _life(spec, p, now, lead, tz)
    p = step.progress

    history_now = [h for h in (step.finished, skipped.finished) if h is not None]
    history_now += history
    nxt = upcoming
    if p is not None and not p.ended and now < p.start:
        nxt = p.occurrence  # the one being prepared is the next one
    conditions = [
        replace(c, message=c.message or c.reason)  # never "" (see clean())
        for c in _conditions(spec, tz, p, step.stage, nxt, history_now, now, skipped.skipping)
    ]
    wake = _wake_at(p, nxt, lead, now)
    if skipped.skipping is not None:  # record the skipped window when its start comes
        wake = min(wake or skipped.skipping.start, skipped.skipping.start)
    return Decision(
        stage=step.stage,
        progress=p,
        freeze=step.freeze,
        run_pre_checks=step.run_pre,
        run_post_checks=step.run_post,
        finished=step.finished,
        next_window=nxt,
        events=(*events, *step.events),
        conditions=tuple(conditions),
        wake_at=wake,
        skipping=skipped.skipping,
        skip_finished=skipped.finished,
    )


def _life(
    spec: MaintenanceWindowSpec, p: Progress | None, now: datetime, lead: timedelta, tz: ZoneInfo
) -> _Step:
    """One step of the life of the occurrence in progress: before its end or after it."""
    if p is not None and not p.ended and now >= p.end:
        p = replace(p, ended_at=p.end, end_reason="Scheduled")
    if p is None:
        return _Step(Stage.IDLE, None)
    if not p.ended:
        return _before_end(spec, p, now, lead, tz)
    return _after_end(p)


def _next_window(
    rec: Recurrence, now: datetime, done: set[str], skipping: Occurrence | None
) -> Occurrence | None:
    """The next scheduled window that will take place: not finished (an occurrence ended or
    skipped before its start is in history) and not being skipped."""
    cursor = now
    for _ in range(8):
        occ = rec.next_after(cursor)
        if occ is None or (occ.id not in done and occ != skipping):
            return occ
        cursor = occ.start
    return None


def skip_time(value: str | None) -> datetime | None:
    """The skip annotation's time (None when absent); ``ValueError`` naming the annotation
    when it is not an RFC 3339 time with an offset."""
    if value is None or not value.strip():
        return None
    try:
        when: datetime | None = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        when = None
    if when is None or when.utcoffset() is None:
        raise ValueError(
            f"annotation {SKIP_ANNOTATION}={value!r} is not an RFC 3339 time with an offset "
            "(the start of a window, as status.nextWindow.start shows it)"
        )
    return when.astimezone(UTC)


@dataclass(frozen=True)
class _Skipped:
    """What the skip annotation does this pass."""

    progress: Progress | None  # the occurrence in progress (a skipped preparation dropped)
    skipping: Occurrence | None = None  # skipped, its start still ahead
    finished: HistoryEntry | None = None  # skipped, its start here: into history now
    events: tuple[Event, ...] = ()


def _apply_skip(
    rec: Recurrence,
    now: datetime,
    p: Progress | None,
    done: set[str],
    value: str | None,
    new: bool,
) -> _Skipped:
    """The scheduled window starting at the skip annotation's time does not take place.

    Level-triggered: it holds while the annotation names a window that has not begun to
    open (removing the annotation before then un-skips it); once that window is in history
    the annotation no longer matters. ``new``: a value not seen before, answered by an Event.
    """

    def ignored(message: str) -> _Skipped:
        return _Skipped(p, events=(Event("Warning", "SkipIgnored", message),) if new else ())

    try:
        at = skip_time(value)
    except ValueError as exc:
        return ignored(str(exc))
    if at is None:
        return _Skipped(p)
    occ = rec.occurrence_at(at)
    if occ is None:
        return ignored(f"no window of this schedule starts at {cond.rfc3339(at)}")
    if occ.id in done or now >= occ.end:
        return ignored(f"window {occ.id} is over")
    if p is not None and p.id == occ.id and (p.opened_at is not None or p.ended or p.skipped):
        return ignored(f"window {occ.id} is already open or over: end it with end-now")
    if p is not None and p.id == occ.id:
        p = None  # its preparation is dropped; nothing was frozen yet
    events = []
    if new:
        msg = f"window {occ.id} at {_local(occ.start, rec.tz)} will be skipped"
        events.append(Event("Normal", "SkipRequested", msg))
    if now < occ.start:
        return _Skipped(p, occ, None, tuple(events))
    entry = HistoryEntry(
        id=occ.id,
        start=occ.start,
        end=occ.end,
        ended_at=now,
        end_reason="SkipRequested",
        pre_checks="NotRun",
        post_checks="NotRun",
        result="Skipped",
        message=f"skipped by request ({SKIP_ANNOTATION})",
    )
    events.append(Event("Normal", "WindowSkipped", f"window {occ.id}: Skipped by request"))
    return _Skipped(p, None, entry, tuple(events))


def _lead_time(spec: MaintenanceWindowSpec) -> timedelta:
    """How long before the start pre-checks begin (nothing to prepare: no lead)."""
    return spec.pre_checks.lead_time if _pre_required(spec) else timedelta(0)


def _follow_spec_edit(rec: Recurrence, p: Progress | None) -> Progress | None:
    """A spec edit that keeps this occurrence's start (say, a longer duration) applies to it."""
    if p is None or p.ended or p.trigger is not None:
        return p  # an on-demand window keeps the duration it was started with
    same = rec.occurrence_at(p.start)
    if same is not None and same.end != p.end:
        return replace(p, end=same.end)
    return p


def _requests(
    rec: Recurrence,
    now: datetime,
    p: Progress | None,
    manual: Manual,
    done: set[str],
    upcoming: Occurrence | None,
) -> tuple[Progress | None, list[Event]]:
    """The manual requests, precheck-now, start-now, end-now: each answered with one Event."""
    events: list[Event] = []
    if manual.precheck_now:
        p, event = _precheck_now(rec, now, p, done, upcoming)
        events.append(event)
    if manual.start_now is not None:
        p, event = _start_now(rec, now, p, done, manual.start_now)
        events.append(event)
    if manual.end_now:
        p, event = _end_now(p, now)
        events.append(event)
    return p, events


def _precheck_now(
    rec: Recurrence,
    now: datetime,
    p: Progress | None,
    done: set[str],
    upcoming: Occurrence | None,
) -> tuple[Progress | None, Event]:
    """The precheck-now request: a new pre-check attempt for the window being prepared."""
    if p is not None and (p.opened_at is not None or p.skipped or p.ended):
        return p, Event("Warning", "PreCheckNowIgnored", "the window is already open or over")
    target = p.occurrence if p is not None else (rec.current(now) or upcoming)
    if target is None or target.id in done:
        return p, Event("Warning", "PreCheckNowIgnored", "no upcoming window")
    attempt = p.attempt + 1 if p is not None else 1
    msg = f"pre-checks requested for the window at {_local(target.start, rec.tz)}"
    fresh = Progress.begin(target)
    if p is not None:  # the same occurrence (an on-demand one keeps its id and trigger)
        fresh = replace(fresh, id=p.id, trigger=p.trigger)
    p = replace(fresh, attempt=attempt, manual=True)
    return p, Event("Normal", "PreChecksRequested", msg)


def start_now_id(value: str) -> str:
    """The id of an on-demand window, from its request value: deterministic, so a pass
    repeated after a failed status write asks for the same backup and snapshot; safe in
    object names (the snapshot ConfigMap's)."""
    slug = re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")[:40].strip("-")
    return f"now-{slug or hashlib.sha256(value.encode()).hexdigest()[:12]}"


def _start_now(
    rec: Recurrence, now: datetime, p: Progress | None, done: set[str], request: StartNow
) -> tuple[Progress | None, Event]:
    """The start-now request: an on-demand window from now, through the same pre-checks and
    gating as a scheduled one. A window merely being prepared gives way (it is prepared
    again at its lead time); one that has reached its start is not interrupted."""

    def ignored(message: str) -> tuple[Progress | None, Event]:
        return p, Event("Warning", "StartNowIgnored", message)

    if p is not None and (p.opened_at is not None or p.ended or p.skipped or now >= p.start):
        return ignored(f"window {p.id} is in progress: end it first (end-now)")
    duration = rec.duration
    if request.duration:
        try:
            duration = parse_duration(request.duration)
        except ValueError as exc:
            return ignored(f"annotation {START_NOW_DURATION_ANNOTATION}: {exc}")
        if not MIN_DURATION <= duration <= MAX_DURATION:
            return ignored(f"annotation {START_NOW_DURATION_ANNOTATION}: not within 1m to 744h")
    pid = start_now_id(request.value)
    if pid in done:
        return ignored(f"request {request.value!r} was used before: set a new value")
    started = Progress(id=pid, start=now, end=now + duration, trigger=request.value)
    dropped = f"; the preparation of window {p.id} gives way" if p is not None else ""
    msg = (
        f"window {pid} requested now for {format_duration(duration)}, until "
        f"{_local(started.end, rec.tz)}; it opens once its pre-checks pass{dropped}"
    )
    return started, Event("Normal", "StartNowRequested", msg)


def _end_now(p: Progress | None, now: datetime) -> tuple[Progress | None, Event]:
    """The end-now request: ends a window that is open or whose pre-checks have begun."""
    if p is not None and not p.ended and (now >= p.start or p.pre_checks != "Pending"):
        p = replace(p, ended_at=now, end_reason="EndNow")
        return p, Event("Normal", "EndNowRequested", f"window {p.id} ended by request")
    return p, Event("Warning", "EndNowIgnored", "no window is open")


def _scheduled_event(occ: Occurrence, tz: ZoneInfo) -> Event:
    msg = f"preparing window {occ.id}: {_local(occ.start, tz)} to {_local(occ.end, tz)}"
    return Event("Normal", "WindowScheduled", msg)


@dataclass(frozen=True)
class _Step:
    """The outcome of one step of an occurrence's life (see :func:`decide`)."""

    stage: Stage
    progress: Progress | None
    freeze: bool = False
    run_pre: bool = False
    run_post: bool = False
    finished: HistoryEntry | None = None
    events: tuple[Event, ...] = ()


def _due_pre_checks(
    spec: MaintenanceWindowSpec, p: Progress, now: datetime, lead: timedelta
) -> Progress:
    """Pre-check bookkeeping before the end: not required, or a rehearsal to run again."""
    if not _pre_required(spec) and p.pre_checks == "Pending":
        p = replace(p, pre_checks="NotRequired", pre_checks_message="no pre-checks configured")
    if (
        p.manual
        and p.pre_checks in ("Passed", "Failed")
        and p.pre_checks_started is not None
        and p.pre_checks_started < p.start - lead <= now
    ):
        # A rehearsal run days ahead does not replace the backup right before the window.
        p = replace(
            p,
            pre_checks="Pending",
            attempt=p.attempt + 1,
            manual=False,
            backup_request=None,
            backup_requested_at=None,
            backup=None,
            pre_checks_message="",
        )
    return p


def _before_end(
    spec: MaintenanceWindowSpec, p: Progress, now: datetime, lead: timedelta, tz: ZoneInfo
) -> _Step:
    """An occurrence that has not ended: waiting, running pre-checks, open or skipped."""
    p = _due_pre_checks(spec, p, now, lead)
    pre = p.pre_checks
    # At the lead time, or earlier when requested by hand.
    run_pre = pre in ("Pending", "Running") and (now >= p.start - lead or p.manual)
    if now < p.start:
        return _Step(Stage.PRE_CHECKS if run_pre else Stage.WAITING, p, run_pre=run_pre)
    pre_ok = pre in ("Passed", "NotRequired")
    if pre_ok or spec.on_pre_check_failure == "Proceed":
        return _open(p, now, tz, run_pre, pre_ok)
    if pre == "Failed":
        return _skip(p)
    return _Step(Stage.PRE_CHECKS, p, run_pre=run_pre)


def _open(p: Progress, now: datetime, tz: ZoneInfo, run_pre: bool, pre_ok: bool) -> _Step:
    """At or after the start with pre-checks passed (or policy Proceed): covered objects frozen."""
    events: tuple[Event, ...] = ()
    if p.opened_at is None:
        p = replace(p, opened_at=now)
        note = "" if pre_ok else f" (pre-checks {p.pre_checks.lower()}, policy Proceed)"
        by = " (started by request)" if p.trigger is not None else ""
        msg = f"window {p.id} open until {_local(p.end, tz)}{by}{note}"
        events = (Event("Normal", "WindowOpened", msg),)
    return _Step(Stage.OPEN, p, freeze=True, run_pre=run_pre, events=events)


def _skip(p: Progress) -> _Step:
    """Pre-checks failed and the policy is Skip: nothing is frozen."""
    if p.skipped:
        return _Step(Stage.SKIPPED, p)
    p = replace(p, skipped=True)
    msg = f"window {p.id} skipped: pre-checks failed: {p.pre_checks_message}"
    return _Step(Stage.SKIPPED, p, events=(Event("Warning", "WindowSkipped", msg),))


def _after_end(p: Progress) -> _Step:
    """An occurrence that has ended: post-checks while they run, then into history."""
    if p.pre_checks in ("Pending", "Running"):
        # The window closed before its pre-checks finished: they failed, and never run again.
        p = replace(p, pre_checks="Failed", pre_checks_message="pre-checks did not finish in time")
    if p.opened_at is not None and p.post_checks in ("Pending", "Running"):
        events: tuple[Event, ...] = ()
        if p.post_checks == "Pending" and p.post_checks_started is None:
            msg = f"window {p.id} ended ({p.end_reason}); released, running post-checks"
            events = (Event("Normal", "WindowEnded", msg),)
        return _Step(Stage.POST_CHECKS, p, run_post=True, events=events)
    finished = _finish(p)
    kind: Literal["Normal", "Warning"] = "Normal" if finished.result == "Succeeded" else "Warning"
    detail = f": {finished.message}" if finished.message else ""
    msg = f"window {p.id}: {finished.result}{detail}"
    return _Step(
        Stage.IDLE, None, finished=finished, events=(Event(kind, f"Window{finished.result}", msg),)
    )


def _wake_at(
    p: Progress | None, nxt: Occurrence | None, lead: timedelta, now: datetime
) -> datetime | None:
    candidates: list[datetime] = []
    if p is not None:
        candidates += [p.start - lead, p.start, p.end]
    if nxt is not None:
        candidates += [nxt.start - lead, nxt.start, nxt.end]
    future = [c for c in candidates if c > now]
    return min(future) if future else None


def _conditions(
    spec: MaintenanceWindowSpec,
    tz: ZoneInfo,
    p: Progress | None,
    stage: Stage,
    nxt: Occurrence | None,
    history: Sequence[HistoryEntry],
    now: datetime,
    skipping: Occurrence | None = None,
) -> list[cond.Condition]:
    last = history[0] if history else None
    return [
        cond.Condition(
            cond.READY, "True", cond.REASON_RECONCILED, "Schedule and targets are valid"
        ),
        _scheduled_condition(spec, tz, nxt, skipping),
        _pre_checks_condition(spec, tz, p, stage, last),
        _active_condition(tz, p, stage, now),
        _post_checks_condition(p, last),
    ]


def _scheduled_condition(
    spec: MaintenanceWindowSpec, tz: ZoneInfo, nxt: Occurrence | None, skipping: Occurrence | None
) -> cond.Condition:
    C = cond.Condition
    note = f"; skipping {_local(skipping.start, tz)} by request" if skipping else ""
    if spec.suspend:
        return C(SCHEDULED, "False", cond.REASON_SUSPENDED, "spec.suspend is true")
    if nxt is None:
        msg = "no window ahead (schedule finished or every window excluded)"
        return C(SCHEDULED, "False", "NoUpcomingWindow", msg + note)
    msg = f"{_local(nxt.start, tz)} to {_local(nxt.end, tz)}{note}"
    return C(SCHEDULED, "True", "NextWindow", msg)


def _pre_checks_condition(
    spec: MaintenanceWindowSpec,
    tz: ZoneInfo,
    p: Progress | None,
    stage: Stage,
    last: HistoryEntry | None,
) -> cond.Condition:
    """The occurrence in progress tells; without one, the last finished occurrence does."""
    C = cond.Condition
    if p is not None and p.pre_checks == "Running" and stage != Stage.IDLE:
        msg = p.pre_checks_message or f"pre-checks running for window {p.id}"
        return C(PRE_CHECKS_PASSED, "Unknown", "Running", msg)
    if p is not None and p.pre_checks == "Pending" and stage != Stage.IDLE:
        at = _local(p.start - spec.pre_checks.lead_time, tz)
        return C(
            PRE_CHECKS_PASSED, "Unknown", "NotRunYet", f"pre-checks for window {p.id} start at {at}"
        )
    if p is not None and p.pre_checks in ("Passed", "NotRequired"):
        return C(PRE_CHECKS_PASSED, "True", p.pre_checks, p.pre_checks_message or "passed")
    if p is not None and p.pre_checks == "Failed":
        return C(PRE_CHECKS_PASSED, "False", "Failed", p.pre_checks_message)
    if last is not None and last.pre_checks in ("Passed", "NotRequired", "Failed"):
        status: cond.ConditionStatus = "False" if last.pre_checks == "Failed" else "True"
        msg = f"window {last.id}: {last.pre_checks.lower()}"
        return C(PRE_CHECKS_PASSED, status, last.pre_checks, msg)
    return C(PRE_CHECKS_PASSED, "Unknown", "NotRunYet", "no window has been prepared yet")


def _active_condition(
    tz: ZoneInfo, p: Progress | None, stage: Stage, now: datetime
) -> cond.Condition:
    C = cond.Condition
    if stage == Stage.OPEN:
        assert p is not None
        return C(ACTIVE, "True", "WindowOpen", f"window {p.id} open until {_local(p.end, tz)}")
    if stage == Stage.SKIPPED:
        assert p is not None
        return C(ACTIVE, "False", "Skipped", f"window {p.id} skipped: pre-checks failed")
    if stage == Stage.PRE_CHECKS and p is not None and now >= p.start:
        msg = f"window {p.id} opens when its pre-checks pass"
        return C(ACTIVE, "False", "WaitingForPreChecks", msg)
    if stage == Stage.POST_CHECKS:
        assert p is not None
        return C(ACTIVE, "False", "Ended", f"window {p.id} ended ({p.end_reason})")
    return C(ACTIVE, "False", "NotInWindow", "no window is open")


def _post_checks_condition(p: Progress | None, last: HistoryEntry | None) -> cond.Condition:
    C = cond.Condition
    if p is not None and p.ended and p.post_checks == "Running":
        msg = p.post_checks_message or f"post-checks running for window {p.id}"
        return C(POST_CHECKS_PASSED, "Unknown", "Running", msg)
    if p is not None and p.ended and p.post_checks == "Pending":
        return C(POST_CHECKS_PASSED, "Unknown", "Running", f"post-checks for window {p.id}")
    if last is not None and last.post_checks in ("Passed", "Failed"):
        status: cond.ConditionStatus = "True" if last.post_checks == "Passed" else "False"
        msg = f"window {last.id}: {last.message or last.post_checks.lower()}"
        return C(POST_CHECKS_PASSED, status, last.post_checks, msg)
    return C(POST_CHECKS_PASSED, "Unknown", "NotRunYet", "no window has ended yet")


# -- step bookkeeping: pure updates of Progress the handler applies after doing the work --------


Step = Literal["pre_checks", "post_checks"]


def _started(p: Progress, step: Step, now: datetime, message: str) -> Progress:
    if getattr(p, step) == "Running":
        return p  # a step already running keeps its start time
    default = f"{step.replace('_', '-')} running"
    fields: dict[str, Any] = {
        step: "Running",
        f"{step}_started": now,
        f"{step}_message": message or default,
    }
    return replace(p, **fields)


def _done(p: Progress, step: Step, ok: bool, message: str) -> Progress:
    fields: dict[str, Any] = {step: "Passed" if ok else "Failed", f"{step}_message": message}
    return replace(p, **fields)


def pre_checks_started(p: Progress, now: datetime, message: str = "") -> Progress:
    return _started(p, "pre_checks", now, message)


def pre_checks_done(p: Progress, ok: bool, message: str) -> Progress:
    return _done(p, "pre_checks", ok, message)


def post_checks_started(p: Progress, now: datetime, message: str = "") -> Progress:
    return _started(p, "post_checks", now, message)


def post_checks_done(p: Progress, ok: bool, message: str) -> Progress:
    return _done(p, "post_checks", ok, message)


def record_history(
    history: Sequence[HistoryEntry], entry: HistoryEntry, limit: int
) -> list[HistoryEntry]:
    """Newest first, one entry per window id, at most ``limit`` entries."""
    rest = [h for h in history if h.id != entry.id]
    return [entry, *rest][:limit]


# -- what pre-checks are waiting for ------------------------------------------------------------


@dataclass(frozen=True)
class BackupOutcome:
    """The state of the on-demand backup a pre-check waits for."""

    state: Literal["Waiting", "Verified", "Failed", "TimedOut"]
    backup: str | None = None
    message: str = ""


@dataclass(frozen=True)
class BackupRecord:
    """One entry of a BackupSchedule's recent backups, as far as a window needs it."""

    name: str
    started: datetime | None
    completed: datetime | None
    verified: bool | None
    failed: bool
    trigger: str | None = None
    message: str = ""


def backup_outcome(
    records: Sequence[BackupRecord],
    request: str,
    requested_at: datetime,
    now: datetime,
    timeout: timedelta,
    skew: timedelta = timedelta(seconds=5),
    acknowledged: bool = False,
) -> BackupOutcome:
    """Has the backup requested with ``request`` at ``requested_at`` been verified?

    A record matches when it carries our request value, or (for schedules that do not echo
    it) when it started after the request. When the schedule acknowledged the request
    without starting a Job for it (a backup was already running, concurrencyPolicy Forbid),
    the backup that completed after the request answers it. A verified match wins over a
    failed one.
    """
    ours = [r for r in records if r.trigger == request]
    if not ours:
        ours = [
            r
            for r in records
            if r.trigger is None and r.started is not None and r.started >= requested_at - skew
        ]
    if not ours and acknowledged:
        ours = [r for r in records if r.completed is not None and r.completed >= requested_at]
    for r in ours:
        if r.verified:
            return BackupOutcome("Verified", r.name, f"backup {r.name} verified")
    for r in ours:
        if r.failed or r.verified is False:
            detail = f": {r.message}" if r.message else ""
            return BackupOutcome("Failed", r.name, f"backup {r.name} failed{detail}")
    if now - requested_at > timeout:
        return BackupOutcome("TimedOut", None, f"no verified backup within {timeout}")
    return BackupOutcome("Waiting", None, "waiting for the backup to be verified")


@dataclass(frozen=True)
class HealthReading:
    """A covered HealthPolicy as post-checks see it."""

    name: str
    healthy: bool | None  # None: not evaluated
    observed_at: datetime | None  # last probe time; older than the release is stale
    severity: str | None = None


@dataclass(frozen=True)
class PostCheckOutcome:
    state: Literal["Waiting", "Passed", "Failed"]
    message: str
    failures: tuple[str, ...] = field(default_factory=tuple)


def health_outcome(
    readings: Sequence[HealthReading],
    released_at: datetime,
    now: datetime,
    within: timedelta,
) -> PostCheckOutcome:
    """Every covered HealthPolicy healthy on a probe made after the release, within ``within``."""
    waiting = [
        r.name
        for r in readings
        if not r.healthy or r.observed_at is None or r.observed_at < released_at
    ]
    if not waiting:
        return PostCheckOutcome("Passed", f"{len(readings)} health policies healthy")
    if now - released_at > within:
        names = ", ".join(sorted(waiting))
        return PostCheckOutcome(
            "Failed", f"not healthy within {within}: {names}", tuple(sorted(waiting))
        )
    return PostCheckOutcome("Waiting", f"waiting for {', '.join(sorted(waiting))} to be healthy")


# -- reading the other kinds' status (plain dicts from the API) ---------------------------------


def _time(value: Any) -> datetime | None:
    try:
        return cond.parse_rfc3339(value)
    except ValueError:
        return None


def backup_records(status: Mapping[str, Any]) -> list[BackupRecord]:
    """The recent backups a BackupSchedule reports (``status.backups``), as a window needs them."""
    entries: Sequence[Any] = ()
    for key in ("backups", "recentBackups"):
        value = status.get(key)
        if isinstance(value, list):
            entries = value
            break
    out = []
    for e in entries:
        if not isinstance(e, Mapping):
            continue
        verified = e.get("verified")
        trigger = e.get("trigger")
        out.append(
            BackupRecord(
                name=str(e.get("name") or e.get("file") or ""),
                started=_time(e.get("startedAt")),
                completed=_time(e.get("completedAt")),
                verified=verified if isinstance(verified, bool) else None,
                failed=e.get("result") == "Failed",
                trigger=str(trigger) if trigger else None,
                message=str(e.get("message") or e.get("reason") or ""),
            )
        )
    return out


def health_readings(items: Sequence[Mapping[str, Any]]) -> list[HealthReading]:
    """Covered HealthPolicies (API objects) as post-checks read them."""
    out = []
    for hp in items:
        status = hp.get("status") or {}
        healthy = cond.find(status.get("conditions"), "Healthy")
        out.append(
            HealthReading(
                name=str(hp["metadata"]["name"]),
                healthy=(healthy or {}).get("status") == "True",
                observed_at=_time(status.get("lastProbeTime")),
                severity=status.get("severity"),
            )
        )
    return out
