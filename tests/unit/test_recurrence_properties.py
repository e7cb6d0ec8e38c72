"""Property tests: "inside a window" agrees with "next window" boundaries, in every zone."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stronghold_operator.logic.recurrence import Recurrence, from_spec
from stronghold_operator.models.base import parse
from stronghold_operator.models.maintenance import MaintenanceWindowSpec

ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "UTC",
    "Australia/Lord_Howe",  # a 30-minute DST shift
    "Asia/Kolkata",  # no DST, +05:30
    "America/Santiago",  # southern-hemisphere DST, changes at midnight
]
# (schedule, duration) pairs: cron and RRULE, wall-clock hours inside DST changes, midnight.
SCHEDULES: list[dict[str, Any]] = [
    {"cron": "0 2 * * 0", "duration": "2h"},
    {"rrule": "FREQ=WEEKLY;BYDAY=SU;BYHOUR=2;BYMINUTE=0", "duration": "2h"},
    {"cron": "30 2 * * *", "duration": "45m"},
    {"rrule": "FREQ=DAILY;BYHOUR=2;BYMINUTE=30", "duration": "45m"},
    {"cron": "0 23 * * 6", "duration": "5h"},
    {"cron": "0 0 * * *", "duration": "30m"},
    {"rrule": "FREQ=MONTHLY;BYDAY=1SU;BYHOUR=1;BYMINUTE=30", "duration": "3h"},
    {"rrule": "FREQ=HOURLY;INTERVAL=6;BYMINUTE=15", "duration": "1h"},
    {"cron": "*/30 * * * *", "duration": "10m"},
    {"cron": "0 1,2,3 * * *", "duration": "20m"},
]
EXCLUSIONS = [[], [{"date": "2026-03-29"}], [{"start": "2026-10-20", "end": "2026-11-05"}]]
BASE = datetime(2025, 6, 1, tzinfo=UTC)
_cache: dict[tuple[int, str, int], Recurrence] = {}


def recurrence(i: int, zone: str, e: int) -> Recurrence:
    key = (i, zone, e)
    if key not in _cache:
        sched = dict(SCHEDULES[i])
        duration = sched.pop("duration")
        body = {
            "schedule": {**sched, "duration": duration},
            "timeZone": zone,
            "exclusions": EXCLUSIONS[e],
        }
        _cache[key] = from_spec(parse(MaintenanceWindowSpec, body), BASE)
    return _cache[key]


recurrences = st.builds(
    recurrence,
    st.integers(0, len(SCHEDULES) - 1),
    st.sampled_from(ZONES),
    st.integers(0, len(EXCLUSIONS) - 1),
)
# Instants over two years, biased to DST-change seasons by sampling minutes uniformly.
instants = st.integers(0, 2 * 366 * 24 * 60).map(lambda m: BASE + timedelta(minutes=m))
fractions = st.floats(0, 1, exclude_max=True, allow_nan=False)
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TICK = timedelta(microseconds=1)


@FAST
@given(recurrences, instants, fractions)
def test_nothing_opens_before_the_next_window(rec: Recurrence, t: datetime, f: float) -> None:
    nxt = rec.next_after(t)
    if nxt is None:
        return
    assert nxt.start > t
    assert nxt.end - nxt.start == rec.duration
    # Any instant between t and the next start is either outside every window or inside a
    # window that had already started at t.
    u = min(t + (nxt.start - t) * f, nxt.start - TICK)  # float rounding must not reach it
    cur = rec.current(u)
    assert cur is None or cur.start <= t


@FAST
@given(recurrences, instants)
def test_next_window_is_inside_exactly_on_its_boundaries(rec: Recurrence, t: datetime) -> None:
    nxt = rec.next_after(t)
    if nxt is None:
        return
    assert rec.current(nxt.start) == nxt
    assert rec.current(nxt.end - TICK) == nxt
    after = rec.current(nxt.end)
    assert after is None or after.start >= nxt.end
    assert rec.current(nxt.start - TICK) != nxt


@FAST
@given(recurrences, instants)
def test_current_window_is_the_next_one_seen_from_just_before(rec: Recurrence, t: datetime) -> None:
    cur = rec.current(t)
    if cur is None:
        return
    assert cur.start <= t < cur.end
    assert rec.next_after(cur.start - TICK) == cur
    assert not rec.excluded(cur)


@FAST
@given(recurrences, instants)
def test_upcoming_windows_are_ordered_disjoint_and_not_excluded(
    rec: Recurrence, t: datetime
) -> None:
    occs = rec.upcoming(t, 6)
    for a, b in itertools.pairwise(occs):
        assert a.end <= b.start
        assert a.id != b.id
    assert all(not rec.excluded(o) for o in occs)
    assert all(o.start > t for o in occs)


@FAST
@given(st.sampled_from(ZONES), instants)
def test_cron_and_rrule_forms_agree(zone: str, t: datetime) -> None:
    for cron_i, rrule_i in ((0, 1), (2, 3)):
        a = recurrence(cron_i, zone, 0).upcoming(t, 3)
        b = recurrence(rrule_i, zone, 0).upcoming(t, 3)
        assert a == b


@FAST
@given(st.sampled_from(ZONES), st.integers(0, 700))
def test_a_daily_wall_clock_window_opens_once_per_local_day(zone: str, day: int) -> None:
    rec = recurrence(2, zone, 0)  # 30 2 * * *
    tz = ZoneInfo(zone)
    local_day = (BASE + timedelta(days=day)).astimezone(tz).date()
    midnight = datetime.combine(local_day, datetime.min.time(), tzinfo=tz)
    occs = [
        o
        for o in rec.upcoming(midnight - timedelta(hours=4), 4)
        if o.start.astimezone(tz).date() == local_day
    ]
    assert len(occs) == 1
    local = occs[0].start.astimezone(tz)
    # 02:30 local, or (if 02:30 did not exist that day) the moment the clocks jumped.
    if (local.hour, local.minute) != (2, 30):
        before = occs[0].start - timedelta(seconds=1)
        assert before.astimezone(tz).utcoffset() != local.utcoffset()
