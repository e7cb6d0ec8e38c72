"""Cron schedules evaluated in an IANA time zone, with explicit DST semantics.

Public API (stable; MaintenanceWindow uses it too)::

    sched = CronSchedule.parse("30 2 * * *", "Europe/Berlin")   # CronError if invalid
    sched.next_after(t)              # first run strictly after t
    sched.previous_at_or_before(t)   # last run at or before t (None if none within 50 years)
    sched.between(t0, t1)            # runs with t0 < run <= t1, ascending (iterator)
    sched.count_between(t0, t1, limit=100)
    missed_runs(sched, last, now, deadline) -> MissedRuns   # catch-up decision

All instants given and returned are timezone-aware; results are in UTC. Naive datetimes are
refused (a naive datetime in scheduling code is a bug waiting for a DST change).

Syntax: five fields ``minute hour day-of-month month day-of-week`` with ``*``, lists, ranges,
steps and English names (``jan``, ``mon``), plus ``@hourly``, ``@daily`` (``@midnight``),
``@weekly``, ``@monthly``, ``@yearly`` (``@annually``). When both day fields are restricted a day
matches if either does (as in Vixie cron). ``L``, ``#``, ``W``, ``?`` and seconds are refused.
cronsim matches the fields; this module only adds the time zone.

DST semantics (the same as Vixie cron's, made exact):

* **Wall-clock schedules** — neither the minute nor the hour field contains ``*`` (for
  example ``30 2 * * *``, ``@daily``). Each matching local time runs exactly once, by the
  rule of :mod:`stronghold_operator.logic.tz`: a slot skipped by spring-forward (02:30 in
  Berlin) runs at the jump (03:00 local), several skipped slots collapse into that one run,
  and a slot repeated by fall-back runs at its first occurrence.
* **Interval schedules** — the minute or hour field contains ``*`` (``*/15 * * * *``,
  ``@hourly``). They follow elapsed time: a run happens at every real instant whose local time
  matches, so skipped local times do not run and a repeated hour runs again.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import takewhile
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

from stronghold_operator.logic.tz import SECOND, aware, offset_changes, wall_starts, zone

__all__ = ["CronError", "CronSchedule", "MissedRuns", "missed_runs"]

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_NAMES = re.compile(r"jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec|sun|mon|tue|wed|thu|fri|sat")
_RANGES = {
    "minute": "0-59",
    "hour": "0-23",
    "day-of-month": "1-31",
    "month": "1-12",
    "day-of-week": "0-7",
}
_EPOCH = datetime(2000, 1, 1)


class CronError(ValueError):
    """An expression or time zone the scheduler cannot use; the message says why."""


@dataclass(frozen=True)
class CronSchedule:
    """A parsed cron expression bound to a time zone. Build with :meth:`parse`."""

    expr: str
    tz: ZoneInfo
    fields: str  # the five fields given to cronsim (macros expanded)
    wall_clock: bool  # True: wall-clock semantics; False: interval semantics (see module doc)
    _sim: CronSim = field(compare=False, repr=False)  # the parsed fields, for _matches

    @classmethod
    def parse(cls, expr: str, tz: str = "UTC") -> CronSchedule:
        """Parse ``expr`` in zone ``tz``; raise :class:`CronError` with a readable reason."""
        text = " ".join(expr.split())
        fields = _MACROS.get(text.lower(), text)
        if text.startswith("@") and fields == text:
            raise CronError(f"unknown macro {text!r}; use @hourly, @daily, @weekly or @monthly")
        raw = fields.split(" ") if fields else []
        if len(raw) != 5:
            raise CronError(
                f"{expr!r} has {len(raw)} fields; expected 5 (minute hour day month weekday)"
            )
        for part in raw:
            if _NAMES.sub("", part.lower()).strip("0123456789*,/-"):
                raise CronError(f"{expr!r}: only numbers, names, '*', ',', '-' and '/' are allowed")
        try:
            sim = CronSim(fields, _EPOCH)
        except CronSimError as exc:
            raise CronError(_why(expr, raw, str(exc))) from None
        try:
            where = zone(tz)
        except ValueError as exc:
            raise CronError(str(exc)) from None
        wall_clock = "*" not in raw[0] and "*" not in raw[1]
        return cls(text, where, fields, wall_clock, sim)

    # -- public queries -------------------------------------------------------------------

    @property
    def zone_name(self) -> str:
        return self.tz.key

    def next_after(self, t: datetime) -> datetime:
        """The first run strictly after ``t`` (UTC)."""
        for run in self._runs(aware(t, "t")):
            return run
        raise CronError(f"{self.expr!r} has no run within 50 years after {t.isoformat()}")

    def previous_at_or_before(self, t: datetime) -> datetime | None:
        """The last run at or before ``t`` (UTC), or None if there is none within 50 years."""
        return next(self._runs(aware(t, "t"), reverse=True), None)

    def between(self, t0: datetime, t1: datetime) -> Iterator[datetime]:
        """Runs ``r`` with ``t0 < r <= t1``, ascending."""
        t0, t1 = aware(t0, "t0"), aware(t1, "t1")
        return takewhile(lambda run: run <= t1, self._runs(t0))

    def count_between(self, t0: datetime, t1: datetime, limit: int = 100) -> int:
        """How many runs ``between(t0, t1)``, counting at most ``limit``."""
        count = 0
        for _ in self.between(t0, t1):
            count += 1
            if count >= limit:
                break
        return count

    # -- internals ------------------------------------------------------------------------

    def _matches(self, n: datetime) -> bool:
        """Whether the naive local minute ``n`` matches the fields (no time zone involved)."""
        s = self._sim
        hit = n.minute in s.minutes and n.hour in s.hours and n.month in s.months
        return hit and s.match_day(n.date())

    def _slots(self, n: datetime, reverse: bool = False) -> Iterator[datetime]:
        """Naive matching times after ``n`` ascending, or at or before it descending."""
        if reverse:  # cronsim starts one second before a whole-second start
            return CronSim(self.fields, n.replace(microsecond=0) + SECOND, reverse=True)
        return CronSim(self.fields, n)

    def _runs(self, t: datetime, reverse: bool = False) -> Iterator[datetime]:
        """Runs after ``t`` ascending, or at or before it descending (UTC)."""
        if self.wall_clock:
            return wall_starts(t, self.tz, partial(self._slots, reverse=reverse), reverse)
        return self._elapsed(t, reverse)

    def _elapsed(self, t: datetime, reverse: bool) -> Iterator[datetime]:
        """Interval runs: between two offset changes local time is UTC plus a constant.

        cronsim matches naive times in the offset in force; a run found beyond an offset
        change is dropped and the search goes on from the change in the offset beyond it.
        """
        edge = start = t  # offset is constant from edge to the runs found from start
        offset = t.astimezone(self.tz).utcoffset()
        while True:
            assert offset is not None
            for n in self._slots((start + offset).replace(tzinfo=None), reverse):
                run = (n - offset).replace(tzinfo=UTC)
                changes = offset_changes(self.tz, *sorted((edge, run)))
                if changes:  # runs lie on whole seconds: go on from one second off the change
                    if reverse:
                        edge = start = changes[-1] - SECOND
                    else:
                        edge, start = changes[0], changes[0] - SECOND
                    offset = edge.astimezone(self.tz).utcoffset()
                    break
                yield run
                edge = run
            else:
                return


def _why(expr: str, raw: list[str], reason: str) -> str:
    """A readable message for cronsim's ``Bad <field>``."""
    name = reason.removeprefix("Bad ")
    if name == "day-of-month":
        try:  # the field alone is fine, so no month given has such a day
            CronSim(f"0 0 {raw[2]} * *", _EPOCH)
            return f"{expr!r} never matches a real date"
        except CronSimError:
            pass
    allowed = _RANGES.get(name, "")
    return f"invalid cron expression {expr!r}: {name} is out of range {allowed} or malformed"


@dataclass(frozen=True)
class MissedRuns:
    """What a scheduler should do about runs that came due while it was not looking.

    ``run`` is the single slot to start now (the most recent missed one), or None when the
    most recent one is older than the starting deadline. ``missed`` counts every slot in the
    window (capped at ``limit``); ``skipped`` is how many of them will never run.
    """

    run: datetime | None
    missed: int
    skipped: int
    capped: bool


def missed_runs(
    sched: CronSchedule,
    last: datetime,
    now: datetime,
    deadline: timedelta | None,
    limit: int = 100,
) -> MissedRuns:
    """Slots in ``(last, now]``: at most one catch-up run, only within ``deadline``.

    Like a Kubernetes CronJob: only the most recent slot may still start, and only if
    ``now - slot <= deadline`` (no deadline: always). Older slots are skipped and counted.
    """
    last, now = aware(last, "last"), aware(now, "now")
    latest = sched.previous_at_or_before(now)
    if latest is None or latest <= last:
        return MissedRuns(None, 0, 0, False)
    count = sched.count_between(last, now, limit)
    capped = count >= limit
    if deadline is not None and now - latest > deadline:
        return MissedRuns(None, count, count, capped)
    return MissedRuns(latest, count, count - 1, capped)
