"""Cron in a time zone: examples around DST changes, and a brute-force oracle."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stronghold_operator.logic.cron import CronError, CronSchedule, missed_runs

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def local(tz: ZoneInfo, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=tz, fold=fold).astimezone(UTC)  # type: ignore[misc]


def runs(expr: str, tz: str, start: datetime, end: datetime) -> list[str]:
    s = CronSchedule.parse(expr, tz)
    return [r.astimezone(s.tz).strftime("%m-%d %H:%M%z") for r in s.between(start, end)]


# -- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr",
    [
        "0 2 * * *",
        "*/15 * * * *",
        "0 3 1 * *",
        "@daily",
        "@weekly",
        "@monthly",
        "@hourly",
        "0 0 * * mon-fri",
        "5,35 1-3 * jan,jul sun",
        "0 0 29 2 *",
    ],
)
def test_valid_expressions_parse(expr: str) -> None:
    s = CronSchedule.parse(expr, "Europe/Berlin")
    assert s.next_after(datetime(2026, 1, 1, tzinfo=UTC)) > datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expr", "needle"),
    [
        ("61 * * * *", "out of range"),
        ("* * *", "3 fields"),
        ("* * * * * *", "6 fields"),
        ("0 0 L * *", "only numbers"),
        ("0 0 * * 5#2", "only numbers"),
        ("@reboot", "unknown macro"),
        ("0 0 31 2 *", "never matches"),
        ("", "0 fields"),
    ],
)
def test_invalid_expressions_say_why(expr: str, needle: str) -> None:
    with pytest.raises(CronError, match=needle):
        CronSchedule.parse(expr, "UTC")


@pytest.mark.parametrize("tz", ["Mars/Olympus", "", "../etc/passwd", "/etc/localtime"])
def test_unknown_zone_is_refused(tz: str) -> None:
    with pytest.raises(CronError, match="unknown time zone"):
        CronSchedule.parse("0 0 * * *", tz)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        CronSchedule.parse("@daily", "UTC").next_after(datetime(2026, 1, 1))


def test_day_of_month_or_day_of_week_when_both_restricted() -> None:
    # Vixie cron: both restricted -> either matches. 2026-03-01 is a Sunday; 2026-03-02 Monday.
    s = CronSchedule.parse("0 0 1 * mon", "UTC")
    got = list(s.between(datetime(2026, 2, 28, tzinfo=UTC), datetime(2026, 3, 10, tzinfo=UTC)))
    assert [d.day for d in got] == [1, 2, 9]


# -- DST: wall-clock schedules run once per day -------------------------------------------

# (expression, zone, from, to): the runs in local time. A slot in the spring gap runs once, at
# the jump; a slot in the repeated hour of the fall runs once, at its first occurrence.
WALL_CLOCK_RUNS = {
    ("30 2 * * *", BERLIN, (2026, 3, 28), (2026, 3, 31)): (
        "03-28 02:30+0100, 03-29 03:00+0200, 03-30 02:30+0200"
    ),
    ("30 2 * * *", BERLIN, (2026, 10, 24), (2026, 10, 27)): (
        "10-24 02:30+0200, 10-25 02:30+0200, 10-26 02:30+0100"
    ),
    ("30 2 * * *", NEW_YORK, (2026, 3, 7), (2026, 3, 10)): (
        "03-07 02:30-0500, 03-08 03:00-0400, 03-09 02:30-0400"
    ),
    ("30 1 * * *", NEW_YORK, (2026, 10, 31), (2026, 11, 3)): (
        "10-31 01:30-0400, 11-01 01:30-0400, 11-02 01:30-0500"
    ),
    # Several slots in the gap (02:00, 02:20, 02:40) collapse into the one run at 03:00.
    ("0,20,40 2,3 29 3 *", BERLIN, (2026, 3, 29, 1), (2026, 3, 29, 4)): (
        "03-29 03:00+0200, 03-29 03:20+0200, 03-29 03:40+0200"
    ),
}


@pytest.mark.parametrize(
    ("case", "expected"),
    WALL_CLOCK_RUNS.items(),
    ids=["berlin-spring", "berlin-fall", "new-york-spring", "new-york-fall", "skipped-slots"],
)
def test_wall_clock_runs_once_per_day_across_dst(
    case: tuple[str, ZoneInfo, tuple[int, ...], tuple[int, ...]], expected: str
) -> None:
    expr, tz, start, end = case
    assert ", ".join(runs(expr, tz.key, local(tz, *start), local(tz, *end))) == expected


# -- DST: interval schedules follow elapsed time ------------------------------------------


def test_hourly_runs_every_real_hour_across_fall_back() -> None:
    s = CronSchedule.parse("@hourly", "Europe/Berlin")
    got = list(
        s.between(datetime(2026, 10, 24, 22, tzinfo=UTC), datetime(2026, 10, 25, 3, tzinfo=UTC))
    )
    assert [g.hour for g in got] == [23, 0, 1, 2, 3]  # 02:00 CEST and 02:00 CET both run
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(got))


def test_quarter_hourly_skips_nonexistent_times_in_spring() -> None:
    got = runs(
        "*/30 * * * *",
        "Europe/Berlin",
        local(BERLIN, 2026, 3, 29, 1),
        local(BERLIN, 2026, 3, 29, 4),
    )
    assert got == ["03-29 01:30+0100", "03-29 03:00+0200", "03-29 03:30+0200", "03-29 04:00+0200"]


def test_previous_at_or_before_inside_repeated_hour() -> None:
    s = CronSchedule.parse("*/30 * * * *", "Europe/Berlin")
    t = local(BERLIN, 2026, 10, 25, 2, 10, fold=1)  # 02:10 CET, the second pass
    assert s.previous_at_or_before(t) == local(BERLIN, 2026, 10, 25, 2, 0, fold=1)
    assert s.next_after(local(BERLIN, 2026, 10, 25, 2, 30, fold=0)) == local(
        BERLIN, 2026, 10, 25, 2, 0, fold=1
    )


def test_wall_clock_queries_from_inside_the_repeated_hour() -> None:
    s = CronSchedule.parse("30 2 * * *", "Europe/Berlin")
    t = local(BERLIN, 2026, 10, 25, 2, 10, fold=1)  # 02:10 CET: 02:30 CEST has already run
    assert s.previous_at_or_before(t) == local(BERLIN, 2026, 10, 25, 2, 30)
    assert s.next_after(t) == local(BERLIN, 2026, 10, 26, 2, 30)


def test_interval_runs_after_a_half_hour_fall_back() -> None:
    # Lord Howe, 5 April 2026: 02:00 +11 falls back to 01:30 +10:30; hour 2 comes at 15:30 UTC.
    s = CronSchedule.parse("*/20 2 * * *", "Australia/Lord_Howe")
    got = s.between(datetime(2026, 4, 4, 14, tzinfo=UTC), datetime(2026, 4, 4, 17, tzinfo=UTC))
    assert [g.strftime("%H:%M") for g in got] == ["15:30", "15:50", "16:10"]


def test_previous_at_or_before_includes_t() -> None:
    s = CronSchedule.parse("0 3 1 * *", "Europe/Berlin")
    t = local(BERLIN, 2026, 6, 1, 3)
    assert s.previous_at_or_before(t) == t
    assert s.previous_at_or_before(t - timedelta(seconds=1)) == local(BERLIN, 2026, 5, 1, 3)


# -- missed runs --------------------------------------------------------------------------


def test_missed_runs_at_most_one_catch_up_within_deadline() -> None:
    s = CronSchedule.parse("0 * * * *", "UTC")
    last = datetime(2026, 1, 1, 0, tzinfo=UTC)
    now = datetime(2026, 1, 1, 5, 10, tzinfo=UTC)
    mr = missed_runs(s, last, now, timedelta(minutes=30))
    assert (mr.run, mr.missed, mr.skipped) == (datetime(2026, 1, 1, 5, tzinfo=UTC), 5, 4)
    late = missed_runs(s, last, now, timedelta(minutes=5))
    assert (late.run, late.missed, late.skipped) == (None, 5, 5)
    nothing = missed_runs(s, now, now + timedelta(minutes=10), None)
    assert (nothing.run, nothing.missed) == (None, 0)


def test_missed_runs_count_is_capped() -> None:
    s = CronSchedule.parse("* * * * *", "UTC")
    mr = missed_runs(
        s, datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 5, tzinfo=UTC), None, limit=100
    )
    assert mr.capped and mr.missed == 100 and mr.run == datetime(2026, 1, 5, tzinfo=UTC)


# -- properties against a brute-force oracle ----------------------------------------------

EXPRS = [
    "30 2 * * *",
    "0 * * * *",
    "*/20 * * * *",
    "15 1-3 * * *",
    "0 0 * * sun",
    "45 2 * 3,10 *",
    "*/7 2 * * *",
    "0 12 1 * *",
    "59 23 * * *",
    "0,30 0-4 25-31 3,10 *",
]
ZONES = ["Europe/Berlin", "America/New_York", "UTC", "Australia/Lord_Howe", "Asia/Kolkata"]


def _wall(u: datetime, s: CronSchedule) -> datetime:
    return u.astimezone(s.tz).replace(tzinfo=None)


def oracle(s: CronSchedule, start: datetime, end: datetime) -> list[datetime]:
    """Runs in (start, end] by definition, minute by minute (module docstring semantics)."""
    out: list[datetime] = []
    if s.wall_clock:
        n = start.astimezone(s.tz).replace(tzinfo=None, second=0, microsecond=0) - timedelta(
            hours=4
        )
        stop = end.astimezone(s.tz).replace(tzinfo=None) + timedelta(hours=4)
        while n <= stop:
            if s._matches(n):
                first = n.replace(tzinfo=s.tz, fold=0).astimezone(UTC)
                if _wall(first, s) != n:
                    # In a gap: the run happens at the first real minute after it.
                    probe = n
                    while _wall(probe.replace(tzinfo=s.tz).astimezone(UTC), s) != probe:
                        probe += timedelta(minutes=1)
                    first = probe.replace(tzinfo=s.tz).astimezone(UTC)
                if start < first <= end and (not out or out[-1] != first):
                    out.append(first)
            n += timedelta(minutes=1)
        return sorted(set(out))
    u = start.replace(second=0, microsecond=0)
    while u <= end:
        if u > start and s._matches(u.astimezone(s.tz).replace(tzinfo=None)):
            out.append(u)
        u += timedelta(minutes=1)
    return out


@settings(max_examples=60, deadline=None)
@given(
    expr=st.sampled_from(EXPRS),
    tz=st.sampled_from(ZONES),
    start=st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2027, 12, 31)),
    near_dst=st.booleans(),
)
def test_between_matches_oracle(expr: str, tz: str, start: datetime, near_dst: bool) -> None:
    s = CronSchedule.parse(expr, tz)
    if near_dst:  # put the window around the northern spring/fall changes
        start = start.replace(month=st_month(start), day=24 + start.day % 7)
    t0 = start.replace(tzinfo=UTC)
    t1 = t0 + timedelta(hours=30)
    assert list(s.between(t0, t1)) == oracle(s, t0, t1)


def st_month(d: datetime) -> int:
    return 3 if d.month % 2 else 10


@settings(max_examples=80, deadline=None)
@given(
    expr=st.sampled_from(EXPRS),
    tz=st.sampled_from(ZONES),
    t=st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2027, 12, 31)),
)
def test_next_and_previous_are_consistent(expr: str, tz: str, t: datetime) -> None:
    s = CronSchedule.parse(expr, tz)
    now = t.replace(tzinfo=UTC)
    nxt = s.next_after(now)
    prev = s.previous_at_or_before(now)
    assert nxt > now
    assert prev is not None and prev <= now
    assert s.previous_at_or_before(nxt) == nxt
    assert s.next_after(prev) == nxt or s.next_after(prev) <= now
    assert s.count_between(prev, nxt, 1000) >= 1
    assert list(s.between(now, nxt)) == [nxt]


@settings(max_examples=50, deadline=None)
@given(
    t=st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2027, 12, 31)),
    hours=st.integers(min_value=0, max_value=200),
    deadline_min=st.one_of(st.none(), st.integers(min_value=1, max_value=600)),
)
def test_missed_runs_properties(t: datetime, hours: int, deadline_min: int | None) -> None:
    s = CronSchedule.parse("0 * * * *", "Europe/Berlin")
    last = t.replace(tzinfo=UTC)
    now = last + timedelta(hours=hours, minutes=7)
    deadline = None if deadline_min is None else timedelta(minutes=deadline_min)
    mr = missed_runs(s, last, now, deadline)
    assert mr.missed == min(100, s.count_between(last, now, 1000))
    if mr.run is not None:
        assert last < mr.run <= now
        assert deadline is None or now - mr.run <= deadline
        assert mr.skipped == mr.missed - 1
    else:
        assert mr.skipped == mr.missed
