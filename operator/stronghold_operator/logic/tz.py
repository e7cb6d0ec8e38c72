"""The one time-zone helper of the scheduling code (cron for backups, cron/RRULE for windows).

Wall-clock rule, shared by every schedule that names local times: a local time that does not
exist (clocks jumped forward) happens at the instant of the jump; one that exists twice
(clocks fell back) happens at its first occurrence. Instants are aware; results are UTC.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from stronghold_operator.models.common import zone

__all__ = ["aware", "offset_changes", "resolve_local", "wall", "wall_starts", "zone"]

SECOND = timedelta(seconds=1)
# No zone changes its UTC offset twice within this step (what offset_changes may miss).
_STEP = timedelta(hours=6)


def aware(t: datetime, what: str = "instant") -> datetime:
    """``t`` in UTC; a naive datetime is refused (it is a bug waiting for a DST change)."""
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {t!r}")
    return t.astimezone(UTC)


def wall(t: datetime, tz: ZoneInfo) -> datetime:
    """The naive local wall-clock time of instant ``t``."""
    return t.astimezone(tz).replace(tzinfo=None)


def offset_changes(tz: ZoneInfo, t0: datetime, t1: datetime) -> list[datetime]:
    """Instants in (t0, t1] at which the UTC offset of ``tz`` changes (to the second)."""
    years = range(t0.astimezone(UTC).year, t1.astimezone(UTC).year + 1)
    return [c for year in years for c in _changes(tz, year) if t0 < c <= t1]


@lru_cache(maxsize=1024)
def _changes(tz: ZoneInfo, year: int) -> tuple[datetime, ...]:
    """The offset changes in (1 January ``year``, 1 January ``year + 1``] UTC (bisection)."""
    out: list[datetime] = []
    cur, end = datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
    while cur < end:
        lo = cur
        hi = cur = min(cur + _STEP, end)
        before = lo.astimezone(tz).utcoffset()
        if hi.astimezone(tz).utcoffset() != before:
            while hi - lo > SECOND:
                mid = (lo + (hi - lo) / 2).replace(microsecond=0)
                if mid.astimezone(tz).utcoffset() == before:
                    lo = mid
                else:
                    hi = mid
            out.append(hi)
    return tuple(out)


def resolve_local(naive: datetime, tz: ZoneInfo) -> datetime:
    """The instant (UTC) of a wall-clock time in ``tz``, by the rule in the module docstring."""
    first = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if wall(first, tz) == naive:
        return first
    second = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    return offset_changes(tz, min(first, second), max(first, second))[0]


def wall_starts(
    t: datetime,
    tz: ZoneInfo,
    slots: Callable[[datetime], Iterator[datetime]],
    reverse: bool = False,
) -> Iterator[datetime]:
    """Instants of wall-clock slots after ``t`` (ascending), or at or before it (descending).

    ``slots(n)`` yields naive local slots strictly after ``n`` ascending, or (``reverse``) at
    or before ``n`` descending. Resolving is monotonic, so the only slots to pass over are
    the few resolved across ``t`` when it lies in a repeated hour, and the duplicates of
    skipped slots collapsed into one jump.
    """
    t = aware(t)
    local = t.astimezone(tz)
    # Backwards from a second-pass time, read it with the first pass's offset: every
    # first-pass slot of that hour resolves to an earlier instant.
    offset = (local.replace(fold=0) if reverse else local).utcoffset()
    assert offset is not None
    last: datetime | None = None
    for n in slots((t + offset).replace(tzinfo=None)):
        inst = resolve_local(n, tz)
        if (inst > t if reverse else inst <= t) or inst == last:
            continue
        yield inst
        last = inst
