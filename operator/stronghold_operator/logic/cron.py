"""Cron schedules evaluated in an IANA time zone, with explicit DST semantics.

Public API (stable; MaintenanceWindow uses it too)::

    sched = CronSchedule.parse("30 2 * * *", "Europe/Berlin")   # CronError if invalid
    sched.next_after(t)              # first run strictly after t
    sched.previous_at_or_before(t)   # last run at or before t (None if none within ~8 years)
    sched.between(t0, t1)            # runs with t0 < run <= t1, ascending (iterator)
    sched.count_between(t0, t1, limit=100)
    missed_runs(sched, last, now, deadline) -> MissedRuns   # catch-up decision

All instants given and returned are timezone-aware; results are in UTC. Naive datetimes are
refused (a naive datetime in scheduling code is a bug waiting for a DST change).

Syntax: five fields ``minute hour day-of-month month day-of-week`` with ``*``, lists, ranges,
steps and English names (``jan``, ``mon``), plus ``@hourly``, ``@daily`` (``@midnight``),
``@weekly``, ``@monthly``, ``@yearly`` (``@annually``). When both day fields are restricted a day
matches if either does (as in Vixie cron). ``L``, ``#``, ``W``, ``?`` and seconds are refused.

DST semantics (the same as Vixie cron's, made exact):

* **Wall-clock schedules** — neither the minute nor the hour field contains ``*`` (for
  example ``30 2 * * *``, ``@daily``). Each matching local time runs exactly once. A slot that
  does not exist because clocks jump forward (02:30 on a spring-forward day in Berlin) runs
  once, at the instant the jump happens (03:00 local); several skipped slots collapse into that
  one run. A slot that exists twice because clocks fall back runs once, at its first occurrence.
* **Interval schedules** — the minute or hour field contains ``*`` (``*/15 * * * *``,
  ``@hourly``). They follow elapsed time: a run happens at every real instant whose local time
  matches, so skipped local times do not run and a repeated hour runs again.

Offset changes are assumed to be at most :data:`MAX_SHIFT` at once, which holds for every
time-zone rule in use today (historical day-skips such as Samoa's in 2011 are not modelled).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from croniter.croniter import CroniterError

__all__ = [
    "MAX_SHIFT",
    "CronError",
    "CronSchedule",
    "MissedRuns",
    "missed_runs",
    "zone",
]

# The largest jump of a UTC offset the search tolerates (see module docstring).
MAX_SHIFT = timedelta(hours=3)
# How far the search looks before deciding a schedule never fires (29 Feb needs 4+ years).
_HORIZON = timedelta(days=366 * 8 + 2)
_MINUTE = timedelta(minutes=1)

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
_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))


class CronError(ValueError):
    """An expression or time zone the scheduler cannot use; the message says why."""


def zone(name: str) -> ZoneInfo:
    """An IANA time zone by name, or :class:`CronError` naming it."""
    if not name or name.startswith(("/", ".")) or ".." in name:
        raise CronError(f"unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(f"unknown time zone {name!r}") from None


def _aware(t: datetime, what: str = "t") -> datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {t!r}")
    return t.astimezone(UTC)


@dataclass(frozen=True)
class CronSchedule:
    """A parsed cron expression bound to a time zone. Build with :meth:`parse`."""

    expr: str
    tz: ZoneInfo
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    dom_star: bool
    dow_star: bool
    wall_clock: bool  # True: wall-clock semantics; False: interval semantics (see module doc)
    _first_fire: datetime | None = field(default=None, compare=False, repr=False)

    @classmethod
    def parse(cls, expr: str, tz: str = "UTC") -> CronSchedule:
        """Parse ``expr`` in zone ``tz``; raise :class:`CronError` with a readable reason."""
        text = " ".join(expr.split())
        canonical = _MACROS.get(text.lower(), text)
        if text.startswith("@") and canonical == text:
            raise CronError(f"unknown macro {text!r}; use @hourly, @daily, @weekly or @monthly")
        raw = canonical.split(" ") if canonical else []
        if len(raw) != 5:
            raise CronError(
                f"{expr!r} has {len(raw)} fields; expected 5 (minute hour day month weekday)"
            )
        for part in raw:
            if _NAMES.sub("", part.lower()).strip("0123456789*,/-"):
                raise CronError(f"{expr!r}: only numbers, names, '*', ',', '-' and '/' are allowed")
        try:
            fields, nth = croniter.expand(canonical)
        except (CroniterError, ValueError) as exc:
            raise CronError(f"invalid cron expression {expr!r}: {exc}") from None
        if nth or len(fields) != 5:
            raise CronError(f"{expr!r}: only the five standard fields are supported")
        sets: list[frozenset[int]] = []
        for values, (lo, hi) in zip(fields, _RANGES, strict=True):
            if values == ["*"]:
                sets.append(frozenset(range(lo, hi + 1)))
                continue
            if not all(isinstance(v, int) for v in values):
                raise CronError(f"{expr!r}: L, W, # and H are not supported")
            # Day of week: croniter already maps 7 to 0 (Sunday); the modulo keeps it so.
            sets.append(frozenset(int(v) % 7 if hi == 6 else int(v) for v in values))
        sched = cls(
            expr=text,
            tz=zone(tz),
            minutes=sets[0],
            hours=sets[1],
            days=sets[2],
            months=sets[3],
            weekdays=sets[4],
            dom_star=raw[2].startswith("*"),
            dow_star=raw[4].startswith("*"),
            wall_clock="*" not in raw[0] and "*" not in raw[1],
        )
        probe = datetime(2000, 1, 1)
        if sched._next_naive(probe, probe + _HORIZON) is None:
            raise CronError(f"{expr!r} never matches a real date")
        return sched

    # -- public queries -------------------------------------------------------------------

    @property
    def zone_name(self) -> str:
        return self.tz.key

    def next_after(self, t: datetime) -> datetime:
        """The first run strictly after ``t`` (UTC)."""
        t = _aware(t)
        local = _naive_local(t, self.tz) - MAX_SHIFT - _MINUTE
        best: datetime | None = None
        limit = local + _HORIZON
        n = self._next_naive(local, limit)
        while n is not None:
            for inst in self._instants(n):
                if inst > t and (best is None or inst < best):
                    best = inst
            if best is not None and n > _naive_local(best, self.tz) + MAX_SHIFT:
                return best
            n = self._next_naive(n, limit)
        if best is None:  # pragma: no cover - parse() refuses schedules that never fire
            raise CronError(f"{self.expr!r} has no run after {t.isoformat()}")
        return best

    def previous_at_or_before(self, t: datetime) -> datetime | None:
        """The last run at or before ``t`` (UTC), or None if there is none within ~8 years."""
        t = _aware(t)
        local = _naive_local(t, self.tz) + MAX_SHIFT + _MINUTE
        best: datetime | None = None
        limit = local - _HORIZON
        n = self._prev_naive(local, limit)
        while n is not None:
            for inst in self._instants(n):
                if inst <= t and (best is None or inst > best):
                    best = inst
            if best is not None and n < _naive_local(best, self.tz) - MAX_SHIFT:
                return best
            n = self._prev_naive(n, limit)
        return best

    def between(self, t0: datetime, t1: datetime) -> Iterator[datetime]:
        """Runs ``r`` with ``t0 < r <= t1``, ascending."""
        t0, t1 = _aware(t0, "t0"), _aware(t1, "t1")
        cur = t0
        while True:
            nxt = self.next_after(cur)
            if nxt > t1:
                return
            yield nxt
            cur = nxt

    def count_between(self, t0: datetime, t1: datetime, limit: int = 100) -> int:
        """How many runs ``between(t0, t1)``, counting at most ``limit``."""
        count = 0
        for _ in self.between(t0, t1):
            count += 1
            if count >= limit:
                break
        return count

    # -- internals ------------------------------------------------------------------------

    def _day_ok(self, d: datetime) -> bool:
        if d.month not in self.months:
            return False
        dom_ok = d.day in self.days
        dow_ok = (d.isoweekday() % 7) in self.weekdays
        if self.dom_star or self.dow_star:
            return dom_ok and dow_ok
        return dom_ok or dow_ok

    def _matches(self, n: datetime) -> bool:
        return n.minute in self.minutes and n.hour in self.hours and self._day_ok(n)

    def _next_naive(self, after: datetime, limit: datetime) -> datetime | None:
        """The first matching naive local minute strictly after ``after``."""
        n = after.replace(second=0, microsecond=0) + _MINUTE
        while n <= limit:
            if n.month not in self.months:
                y, m = (n.year + 1, 1) if n.month == 12 else (n.year, n.month + 1)
                n = datetime(y, m, 1)
            elif not self._day_ok(n):
                n = datetime(n.year, n.month, n.day) + timedelta(days=1)
            elif n.hour not in self.hours:
                n = n.replace(minute=0) + timedelta(hours=1)
            elif n.minute not in self.minutes:
                n += _MINUTE
            else:
                return n
        return None

    def _prev_naive(self, before: datetime, limit: datetime) -> datetime | None:
        """The last matching naive local minute strictly before ``before``."""
        n = before.replace(second=0, microsecond=0)
        if n == before:
            n -= _MINUTE
        while n >= limit:
            if n.month not in self.months:
                n = datetime(n.year, n.month, 1) - _MINUTE
            elif not self._day_ok(n):
                n = datetime(n.year, n.month, n.day) - _MINUTE
            elif n.hour not in self.hours:
                n = n.replace(minute=0) - _MINUTE
            elif n.minute not in self.minutes:
                n -= _MINUTE
            else:
                return n
        return None

    def _instants(self, n: datetime) -> list[datetime]:
        """The real instants (UTC) at which the naive local slot ``n`` runs."""
        first = n.replace(tzinfo=self.tz, fold=0).astimezone(UTC)
        second = n.replace(tzinfo=self.tz, fold=1).astimezone(UTC)
        if _naive_local(first, self.tz) != n:  # n falls in a gap: it does not exist
            return [_transition(second, first, self.tz)] if self.wall_clock else []
        if first != second and not self.wall_clock:  # n exists twice (clocks fell back)
            return sorted((first, second))
        return [first]


def _naive_local(t: datetime, tz: ZoneInfo) -> datetime:
    return t.astimezone(tz).replace(tzinfo=None)


def _transition(lo: datetime, hi: datetime, tz: ZoneInfo) -> datetime:
    """The instant in (lo, hi] at which the UTC offset of ``tz`` changes (bisection, 1 s)."""
    lo, hi = min(lo, hi), max(lo, hi)
    before = lo.astimezone(tz).utcoffset()
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        mid = mid.replace(microsecond=0)
        if mid.astimezone(tz).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return hi.replace(microsecond=0)


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
    last, now = _aware(last, "last"), _aware(now, "now")
    latest = sched.previous_at_or_before(now)
    if latest is None or latest <= last:
        return MissedRuns(None, 0, 0, False)
    count = sched.count_between(last, now, limit)
    capped = count >= limit
    if deadline is not None and now - latest > deadline:
        return MissedRuns(None, count, count, capped)
    return MissedRuns(latest, count, count - 1, capped)
