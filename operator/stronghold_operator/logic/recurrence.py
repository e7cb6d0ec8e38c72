"""When a maintenance window is open: starts from cron or RRULE, a duration, exclusions.

Public API::

    rec = from_spec(spec)               # InvalidSpec naming the field if unusable
    rec.current(now)                    # the occurrence open at ``now`` (start <= now < end)
    rec.next_after(now)                 # the first occurrence starting strictly after ``now``
    rec.upcoming(now, n)                # the next n occurrences (for docs, CLI, tests)

All instants are timezone-aware; results are in UTC.

Semantics, chosen to be the same for cron and RRULE (and the same as BackupSchedule's cron):

* Start times are **wall-clock times in the window's zone**. A start that does not exist
  because clocks jump forward (02:00 on Europe/Berlin's spring-forward Sunday) happens once,
  at the instant of the jump (03:00 local). A start that exists twice because clocks fall
  back happens once, at its first occurrence (the earlier instant).
  Cron expressions with ``*`` in the minute or hour field follow elapsed time instead (see
  :mod:`stronghold_operator.logic.cron`).
* ``duration`` is **elapsed time**: a 2h window is open for two real hours even when the
  clocks change inside it (a 02:00-04:00 Berlin window on the fall-back night ends at 03:00
  CET, two hours after it began at 02:00 CEST).
* Windows may cross midnight: only the start is matched by the schedule.
* An **exclusion** (a local date or an inclusive range of local dates) cancels every
  occurrence that would be open at any moment of those dates. A window from Saturday 23:00
  to Sunday 01:00 is cancelled by excluding the Sunday as well as by excluding the Saturday.
* Occurrences of one window never overlap: :func:`from_spec` refuses a duration longer than
  the gap between two starts (checked over the coming ~13 months).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from itertools import takewhile
from typing import Protocol
from zoneinfo import ZoneInfo

from dateutil.rrule import rrule, rruleset, rrulestr

from stronghold_operator.logic.cron import CronError, CronSchedule
from stronghold_operator.logic.tz import aware, offset_changes, resolve_local, wall_starts, zone
from stronghold_operator.models.base import InvalidSpec
from stronghold_operator.models.maintenance import Exclusion, MaintenanceWindowSpec

__all__ = [
    "Occurrence",
    "Recurrence",
    "from_spec",
    "resolve_local",
]

# The largest jump of a UTC offset at once (true of every zone's rules in use today).
MAX_SHIFT = timedelta(hours=3)
# How many cancelled (excluded) occurrences may be skipped while looking for the next one.
MAX_SKIPPED = 2000
# How far ahead the overlap check looks (a year and a month covers both DST changes).
OVERLAP_HORIZON = timedelta(days=400)
OVERLAP_SAMPLES = 500
# RRULE DTSTART when the rule gives none: only matters for INTERVAL>1 and missing BYxxx parts.
DEFAULT_DTSTART = datetime(2024, 1, 1)  # a Monday, 00:00 local
_SUBHOURLY = re.compile(r"FREQ\s*=\s*(SECONDLY|MINUTELY)")


@dataclass(frozen=True, order=True)
class Occurrence:
    """One opening of a window, as real instants (UTC)."""

    start: datetime
    end: datetime

    @property
    def id(self) -> str:
        """Deterministic identity: the UTC start to the minute (like CNPG's child names)."""
        return self.start.astimezone(UTC).strftime("%Y%m%d%H%M")

    def contains(self, t: datetime) -> bool:
        return self.start <= t < self.end

    def local(self, tz: ZoneInfo) -> tuple[datetime, datetime]:
        return self.start.astimezone(tz), self.end.astimezone(tz)


class StartRule(Protocol):
    """Where windows start: strictly after ``t`` / at or before ``t`` (UTC, None if none)."""

    def next_after(self, t: datetime) -> datetime | None: ...

    def previous_at_or_before(self, t: datetime) -> datetime | None: ...

    def between(self, t0: datetime, t1: datetime) -> Iterator[datetime]: ...


@dataclass(frozen=True)
class RRuleStarts:
    """Starts from an RFC 5545 RRULE evaluated in local wall time of ``tz``.

    dateutil iterates naive local times; :func:`~stronghold_operator.logic.tz.wall_starts`
    resolves them to instants by the wall-clock rule (the same as cron's).
    """

    rule: rrule | rruleset
    tz: ZoneInfo

    def next_after(self, t: datetime) -> datetime | None:
        return next(wall_starts(t, self.tz, self.rule.xafter), None)

    def previous_at_or_before(self, t: datetime) -> datetime | None:
        return next(wall_starts(t, self.tz, self._before, reverse=True), None)

    def between(self, t0: datetime, t1: datetime) -> Iterator[datetime]:
        """Starts in (t0, t1], ascending: one pass over the rule, not one search per start."""
        t1 = aware(t1)
        return takewhile(lambda start: start <= t1, wall_starts(t0, self.tz, self.rule.xafter))

    def _before(self, n: datetime) -> Iterator[datetime]:
        slot = self.rule.before(n, inc=True)
        while slot is not None:
            yield slot
            slot = self.rule.before(slot)


@dataclass(frozen=True)
class OneOff:
    """A single window: the start is its only start."""

    at: datetime

    def next_after(self, t: datetime) -> datetime | None:
        return self.at if self.at > aware(t) else None

    def previous_at_or_before(self, t: datetime) -> datetime | None:
        return self.at if self.at <= aware(t) else None

    def between(self, t0: datetime, t1: datetime) -> Iterator[datetime]:
        if aware(t0) < self.at <= aware(t1):
            yield self.at


@dataclass(frozen=True)
class Recurrence:
    """Starts + duration + exclusions: the occurrences of one window."""

    starts: StartRule
    duration: timedelta
    tz: ZoneInfo
    exclusions: tuple[tuple[datetime, datetime], ...] = ()  # [from, to) real instants
    description: str = field(default="", compare=False)

    def excluded(self, occ: Occurrence) -> bool:
        return any(occ.start < hi and lo < occ.end for lo, hi in self.exclusions)

    def _at(self, start: datetime) -> Occurrence:
        return Occurrence(start, start + self.duration)

    def current(self, now: datetime) -> Occurrence | None:
        """The occurrence open at ``now`` (start <= now < end), if any."""
        start = self.starts.previous_at_or_before(aware(now))
        if start is None:
            return None
        occ = self._at(start)
        if not occ.contains(aware(now)) or self.excluded(occ):
            return None
        return occ

    def next_after(self, now: datetime) -> Occurrence | None:
        """The first occurrence starting strictly after ``now`` that is not excluded."""
        cursor = aware(now)
        for _ in range(MAX_SKIPPED):
            start = self.starts.next_after(cursor)
            if start is None:
                return None
            occ = self._at(start)
            if not self.excluded(occ):
                return occ
            cursor = start
        return None

    def occurrence_at(self, start: datetime) -> Occurrence | None:
        """The occurrence that starts exactly at ``start`` (None if the schedule has none)."""
        found = self.starts.previous_at_or_before(aware(start))
        if found != aware(start):
            return None
        occ = self._at(found)
        return None if self.excluded(occ) else occ

    def upcoming(self, now: datetime, count: int) -> list[Occurrence]:
        out: list[Occurrence] = []
        cursor = aware(now)
        while len(out) < count:
            occ = self.next_after(cursor)
            if occ is None:
                break
            out.append(occ)
            cursor = occ.start
        return out

    def between(self, t0: datetime, t1: datetime) -> list[Occurrence]:
        """Occurrences starting in (t0, t1], exclusions applied, ascending."""
        occs = (self._at(s) for s in self.starts.between(t0, t1))
        return [o for o in occs if not self.excluded(o)]


def _exclusion_spans(
    exclusions: Sequence[Exclusion], tz: ZoneInfo
) -> list[tuple[datetime, datetime]]:
    spans = []
    for ex in exclusions:
        lo = resolve_local(datetime.combine(ex.first, time()), tz)
        hi = resolve_local(datetime.combine(ex.last + timedelta(days=1), time()), tz)
        spans.append((lo, hi))
    return spans


def _local_naive(value: datetime, tz: ZoneInfo) -> datetime:
    """A spec datetime as a real instant: with an offset as given, without one in ``tz``."""
    if value.tzinfo is not None and value.utcoffset() is not None:
        return value.astimezone(UTC)
    return resolve_local(value.replace(microsecond=0), tz)


@lru_cache(maxsize=256)
def _compile_rrule(text: str, tz_name: str) -> rrule | rruleset:
    """Parse an RRULE (optionally with DTSTART/EXDATE/RDATE lines); cached per process.

    ``cache=True`` makes dateutil remember occurrences, so a rule that never fires is
    searched to the end of time only once.
    """
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    clean: list[str] = []
    for ln in lines:
        head = ln.split(":", 1)[0].upper() if ":" in ln else "RRULE"
        name = head.split(";")[0]
        if name in ("DTSTART", "EXDATE", "RDATE"):
            if ln.rstrip().upper().endswith("Z"):
                raise ValueError(f"{name} is read in spec.timeZone; drop the Z")
            params = head.split(";")[1:]
            for param in params:
                if param.startswith("TZID=") and param[5:] != tz_name.upper():
                    raise ValueError(f"{name} has a TZID other than spec.timeZone ({tz_name})")
            # The zone is spec.timeZone either way: evaluate in naive local wall time.
            kept = [
                p for p in ln.split(":", 1)[0].split(";")[1:] if not p.upper().startswith("TZID=")
            ]
            clean.append(";".join([name, *kept]) + ":" + ln.split(":", 1)[1])
        elif name in ("RRULE", "EXRULE"):
            clean.append(ln)
        else:
            raise ValueError(f"unsupported line {name!r}: use RRULE, DTSTART, EXDATE or RDATE")
    if _SUBHOURLY.search(text.upper()):
        raise ValueError("FREQ must be HOURLY or longer (windows last at least a minute)")
    rule = rrulestr(
        "\n".join(clean), dtstart=DEFAULT_DTSTART, cache=True, ignoretz=True, forceset=True
    )
    if not isinstance(rule, rruleset):  # pragma: no cover - forceset=True guarantees it
        raise ValueError("could not build a rule set")
    return rule


def _check_no_overlap(rec: Recurrence, now: datetime, field_name: str) -> None:
    """Refuse a duration longer than the gap between two starts.

    Gaps change only around UTC offset changes (and with the calendar), so the check walks
    the first :data:`OVERLAP_SAMPLES` starts plus the starts around every offset change in
    the coming :data:`OVERLAP_HORIZON`.
    """
    spans = [(now - rec.duration, now + OVERLAP_HORIZON)]
    # Interval cron schedules follow elapsed time: an offset change only ever widens a gap.
    elapsed = isinstance(rec.starts, CronSchedule) and not rec.starts.wall_clock
    if not elapsed:
        # Only a pair of starts within MAX_SHIFT of a change can be mapped closer together.
        margin = rec.duration + MAX_SHIFT + timedelta(hours=1)
        changes = offset_changes(rec.tz, now, now + OVERLAP_HORIZON)
        spans += [(t - margin, t + margin) for t in changes]
    for lo, hi in spans:
        prev: datetime | None = None
        for count, start in enumerate(rec.starts.between(lo, hi)):
            if count > OVERLAP_SAMPLES:
                break
            if prev is not None and start - prev < rec.duration:
                raise InvalidSpec(
                    field_name,
                    f"duration {rec.duration} is longer than the {start - prev} between the "
                    f"windows starting at {prev.isoformat()} and {start.isoformat()}",
                )
            prev = start


def from_spec(spec: MaintenanceWindowSpec, now: datetime) -> Recurrence:
    """Build the recurrence of a window; :class:`InvalidSpec` naming the field if unusable.

    ``now`` bounds the overlap check (next ~13 months) and says whether a schedule that has
    no occurrence left is "finished" (not an error) or "never fires" (an error).
    """
    try:
        tz = zone(spec.time_zone)
    except ValueError as exc:
        raise InvalidSpec("timeZone", str(exc)) from None
    sched = spec.schedule
    spans = tuple(_exclusion_spans(spec.exclusions, tz))
    starts: StartRule
    if sched.cron is not None:
        try:
            starts = CronSchedule.parse(sched.cron, spec.time_zone)
        except CronError as exc:
            raise InvalidSpec("schedule.cron", str(exc)) from None
        what = f"cron {sched.cron!r}"
    elif sched.rrule is not None:
        try:
            rule = _compile_rrule(sched.rrule, spec.time_zone)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise InvalidSpec("schedule.rrule", f"invalid RRULE: {exc}") from None
        starts = RRuleStarts(rule, tz)
        if rule.after(datetime.min, inc=True) is None:
            raise InvalidSpec("schedule.rrule", "the RRULE never fires")
        what = f"RRULE {sched.rrule!r}"
    else:
        assert sched.start is not None
        begin = _local_naive(sched.start, tz)
        if sched.end is not None:
            finish = _local_naive(sched.end, tz)
            if finish <= begin:
                raise InvalidSpec("schedule.end", "end must be after start")
            duration = finish - begin
        else:
            assert sched.duration is not None
            duration = sched.duration
        rec = Recurrence(OneOff(begin), duration, tz, spans, f"once at {begin.isoformat()}")
        if rec.excluded(Occurrence(begin, begin + duration)):
            raise InvalidSpec("exclusions", "the one-off window falls on an excluded date")
        return rec
    assert sched.duration is not None
    rec = Recurrence(starts, sched.duration, tz, spans, what)
    _check_no_overlap(rec, aware(now), "schedule.duration")
    return rec
