"""MaintenanceWindow recurrence: cron/RRULE starts in a zone, durations, DST, exclusions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from stronghold_operator.logic.recurrence import Occurrence, Recurrence, from_spec, resolve_local
from stronghold_operator.models.base import InvalidSpec, parse
from stronghold_operator.models.maintenance import MaintenanceWindowSpec

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
NOW = datetime(2026, 1, 1, tzinfo=UTC)

# The guide's weekly window, Sunday 02:00 Berlin, as cron and as RRULE.
WEEKLY_FORMS = [
    {"cron": "0 2 * * 0"},
    {"cron": "0 2 * * sun"},
    {"rrule": "FREQ=WEEKLY;BYDAY=SU;BYHOUR=2;BYMINUTE=0"},
    {"rrule": "RRULE:FREQ=WEEKLY;BYDAY=SU;BYHOUR=2;BYMINUTE=0;BYSECOND=0"},
]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def build(schedule: dict[str, Any], tz: str = "Europe/Berlin", **extra: Any) -> Recurrence:
    spec = parse(MaintenanceWindowSpec, {"schedule": schedule, "timeZone": tz, **extra})
    return from_spec(spec, NOW)


def occ(start: datetime, hours: float) -> Occurrence:
    return Occurrence(start, start + timedelta(hours=hours))


# -- the guide's weekly window across both Berlin DST changes -------------------------------


@pytest.fixture(params=WEEKLY_FORMS, ids=lambda f: next(iter(f.values())))
def weekly(request: pytest.FixtureRequest) -> Recurrence:
    """The guide's 2h weekly window, in each of the forms."""
    return build({**request.param, "duration": "2h"})


def test_weekly_berlin_normal_sunday(weekly: Recurrence) -> None:
    # 22 March 2026 is winter time (CET, UTC+1): 02:00-04:00 local is 01:00-03:00 UTC.
    assert weekly.next_after(utc(2026, 3, 21)) == occ(utc(2026, 3, 22, 1), 2)
    start, end = weekly.next_after(utc(2026, 3, 21)).local(BERLIN)  # type: ignore[union-attr]
    assert (start.hour, end.hour) == (2, 4)


def test_weekly_berlin_spring_forward_opens_once_at_the_jump(weekly: Recurrence) -> None:
    # 29 March 2026: 02:00 CET does not exist (clocks jump to 03:00 CEST at 01:00 UTC).
    nxt = weekly.next_after(utc(2026, 3, 28))
    assert nxt == occ(utc(2026, 3, 29, 1), 2)
    start, end = nxt.local(BERLIN)  # type: ignore[union-attr]
    assert (start.hour, start.minute, end.hour) == (3, 0, 5)  # two real hours
    # Exactly one window that day, and the following one is back at 02:00 CEST.
    assert weekly.next_after(nxt.start) == occ(utc(2026, 4, 5, 0), 2)  # type: ignore[union-attr]


def test_weekly_berlin_fall_back_opens_once_at_first_occurrence(weekly: Recurrence) -> None:
    # 25 October 2026: 02:00-03:00 happens twice; the window opens at the first 02:00 (CEST).
    nxt = weekly.next_after(utc(2026, 10, 24))
    assert nxt == occ(utc(2026, 10, 25, 0), 2)
    start, end = nxt.local(BERLIN)  # type: ignore[union-attr]
    assert start.utcoffset() == timedelta(hours=2)
    assert end.utcoffset() == timedelta(hours=1)
    assert (start.hour, end.hour) == (2, 3)  # 02:00 CEST to 03:00 CET: two real hours
    # Not again at the second 02:00 (01:00 UTC).
    assert weekly.current(utc(2026, 10, 25, 2, 30)) is None
    assert weekly.next_after(nxt.start) == occ(utc(2026, 11, 1, 1), 2)  # type: ignore[union-attr]


# -- America/New_York ----------------------------------------------------------------------


# A daily 1h window at HH:30 New York time, from `since`: its next three starts (UTC), the local
# hour the first one opens at, and instants that must not be inside a window.
NEW_YORK_DAILY = {
    # 1 November 2026: 01:30 happens twice (EDT then EST); the window opens at 05:30 UTC only,
    # not again at 06:30 UTC (the second 01:30-02:30, EST).
    "fall-back": (
        1,
        utc(2026, 10, 31, 12),
        [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30), utc(2026, 11, 3, 6, 30)],
        1,
        [utc(2026, 11, 1, 6, 45)],
    ),
    # 8 March 2026: 02:30 EST does not exist; clocks jump 02:00 -> 03:00 EDT at 07:00 UTC.
    "spring-forward": (
        2,
        utc(2026, 3, 7, 12),
        [utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30), utc(2026, 3, 10, 6, 30)],
        3,
        [],
    ),
}


@pytest.mark.parametrize("syntax", ["cron", "rrule"])
@pytest.mark.parametrize("change", NEW_YORK_DAILY)
def test_new_york_daily_runs_once_across_dst(change: str, syntax: str) -> None:
    hour, since, starts, local_hour, closed = NEW_YORK_DAILY[change]
    form = (
        {"cron": f"30 {hour} * * *"}
        if syntax == "cron"
        else {"rrule": f"FREQ=DAILY;BYHOUR={hour};BYMINUTE=30"}
    )
    rec = build({**form, "duration": "1h"}, tz="America/New_York")
    days = rec.upcoming(since, 3)
    assert [o.start for o in days] == starts
    assert days[0].local(NEW_YORK)[0].hour == local_hour
    for t in closed:
        assert rec.current(t) is None


# -- windows crossing midnight ---------------------------------------------------------------


def test_window_crossing_midnight() -> None:
    rec = build({"cron": "0 23 * * 6", "duration": "3h"})
    nxt = rec.next_after(utc(2026, 11, 25))
    assert nxt == occ(utc(2026, 11, 28, 22), 3)
    # Sunday 00:30 local is inside Saturday's window; Sunday 02:00 local is not.
    assert rec.current(datetime(2026, 11, 29, 0, 30, tzinfo=BERLIN)) == nxt
    assert rec.current(datetime(2026, 11, 29, 2, 0, tzinfo=BERLIN)) is None


def test_window_crossing_midnight_and_a_dst_change() -> None:
    rec = build({"rrule": "FREQ=WEEKLY;BYDAY=SA;BYHOUR=23", "duration": "4h"})
    nxt = rec.next_after(utc(2026, 3, 27))
    # Saturday 23:00 CET (22:00 UTC) + 4 real hours = Sunday 04:00 CEST.
    assert nxt == occ(utc(2026, 3, 28, 22), 4)
    assert nxt.local(BERLIN)[1].hour == 4  # type: ignore[union-attr]


# -- exclusions ------------------------------------------------------------------------------


def test_exclusion_of_one_date() -> None:
    rec = build({"cron": "0 2 * * 0", "duration": "2h"}, exclusions=[{"date": "2026-12-27"}])
    assert rec.next_after(utc(2026, 12, 21)) == occ(utc(2027, 1, 3, 1), 2)
    assert rec.current(utc(2026, 12, 27, 1, 30)) is None


def test_exclusion_of_a_date_range_is_inclusive() -> None:
    rec = build(
        {"cron": "0 2 * * 0", "duration": "2h"},
        exclusions=[{"start": "2026-12-20", "end": "2027-01-10", "reason": "year-end freeze"}],
    )
    assert rec.next_after(utc(2026, 12, 14)) == occ(utc(2027, 1, 17, 1), 2)


def test_exclusion_cancels_a_window_that_only_reaches_into_the_date() -> None:
    sched = {"cron": "0 23 * * 6", "duration": "2h"}
    rec = build(sched, exclusions=[{"date": "2026-11-29"}])  # the Sunday
    assert rec.next_after(utc(2026, 11, 25)) == occ(utc(2026, 12, 5, 22), 2)


def test_window_ending_at_midnight_is_not_cancelled_by_the_next_date() -> None:
    rec = build({"cron": "0 22 * * 6", "duration": "2h"}, exclusions=[{"date": "2026-11-29"}])
    assert rec.next_after(utc(2026, 11, 25)) == occ(utc(2026, 11, 28, 21), 2)


def test_exclusions_are_local_dates() -> None:
    # 00:30 Berlin on 1 Dec is 23:30 UTC on 30 Nov: excluding 1 Dec cancels it.
    rec = build({"cron": "30 0 * * *", "duration": "1h"}, exclusions=[{"date": "2026-12-01"}])
    starts = [o.start for o in rec.upcoming(utc(2026, 11, 29, 12), 2)]
    assert starts == [utc(2026, 11, 29, 23, 30), utc(2026, 12, 1, 23, 30)]


def test_every_window_excluded_means_no_next_window() -> None:
    rec = build(
        {"rrule": "FREQ=YEARLY;BYMONTH=12;BYMONTHDAY=25;BYHOUR=1;COUNT=3", "duration": "1h"},
        exclusions=[{"start": "2023-01-01", "end": "2030-01-01"}],
    )
    assert rec.next_after(NOW) is None


# -- RRULE forms -----------------------------------------------------------------------------


def test_rrule_monthly_first_sunday() -> None:
    rec = build({"rrule": "FREQ=MONTHLY;BYDAY=1SU;BYHOUR=3;BYMINUTE=0", "duration": "1h"})
    local = [o.local(BERLIN)[0] for o in rec.upcoming(utc(2026, 1, 1), 3)]
    assert [(d.month, d.day, d.hour) for d in local] == [(1, 4, 3), (2, 1, 3), (3, 1, 3)]


def test_rrule_with_dtstart_every_other_week() -> None:
    rule = "DTSTART:20260105T220000\nRRULE:FREQ=WEEKLY;INTERVAL=2;BYDAY=MO"
    rec = build({"rrule": rule, "duration": "3h"})
    local = [o.local(BERLIN)[0] for o in rec.upcoming(utc(2026, 1, 6), 3)]
    assert [(d.month, d.day, d.hour) for d in local] == [(1, 19, 22), (2, 2, 22), (2, 16, 22)]


def test_rrule_dtstart_with_the_same_tzid_is_accepted() -> None:
    rule = "DTSTART;TZID=Europe/Berlin:20260104T020000\nRRULE:FREQ=WEEKLY;BYDAY=SU"
    rec = build({"rrule": rule, "duration": "2h"})
    assert rec.next_after(utc(2026, 3, 21)) == occ(utc(2026, 3, 22, 1), 2)


def test_rrule_count_and_until_finish() -> None:
    rec = build({"rrule": "DTSTART:20260104T020000\nRRULE:FREQ=WEEKLY;COUNT=2", "duration": "1h"})
    assert [o.start for o in rec.upcoming(utc(2026, 1, 1), 5)] == [
        utc(2026, 1, 4, 1),
        utc(2026, 1, 11, 1),
    ]
    past = build({"rrule": "FREQ=DAILY;BYHOUR=2;UNTIL=20250101T000000", "duration": "1h"})
    assert past.next_after(NOW) is None  # finished: valid, just nothing ahead


def test_rrule_exdate_removes_one_start() -> None:
    rule = "DTSTART:20260104T020000\nRRULE:FREQ=WEEKLY\nEXDATE:20260111T020000"
    rec = build({"rrule": rule, "duration": "1h"})
    assert [o.start for o in rec.upcoming(utc(2026, 1, 5), 2)] == [
        utc(2026, 1, 18, 1),
        utc(2026, 1, 25, 1),
    ]


# -- one-off windows -------------------------------------------------------------------------


def test_one_off_local_times() -> None:
    rec = build({"start": "2026-12-24T22:00:00", "end": "2026-12-25T02:00:00"})
    o = occ(utc(2026, 12, 24, 21), 4)
    assert rec.next_after(NOW) == o
    assert rec.current(utc(2026, 12, 25, 0)) == o
    assert rec.next_after(o.start) is None
    assert rec.current(o.end) is None


def test_one_off_with_offset_and_duration() -> None:
    rec = build({"start": "2026-06-01T10:00:00Z", "duration": "90m"}, tz="America/New_York")
    assert rec.next_after(NOW) == Occurrence(utc(2026, 6, 1, 10), utc(2026, 6, 1, 11, 30))


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "extra", "field", "words"),
    [
        ({"cron": "0 2 * * 0", "duration": "2h"}, {"timeZone": "Mars/Olympus"}, "timeZone", "zone"),
        ({"cron": "0 2 * * 0", "duration": "0s"}, {}, "schedule", "duration"),
        ({"cron": "0 2 * * 0"}, {}, "schedule", "duration"),
        ({"cron": "0 2 * *", "duration": "1h"}, {}, "schedule.cron", "fields"),
        ({"cron": "0 2 31 2 *", "duration": "1h"}, {}, "schedule.cron", "never"),
        (
            {"rrule": "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30", "duration": "1h"},
            {},
            "schedule.rrule",
            "never fires",
        ),
        ({"rrule": "FREQ=SOMETIMES", "duration": "1h"}, {}, "schedule.rrule", "invalid"),
        ({"rrule": "FREQ=MINUTELY", "duration": "1m"}, {}, "schedule.rrule", "HOURLY"),
        (
            {"rrule": "DTSTART:20260101T020000Z\nRRULE:FREQ=DAILY", "duration": "1h"},
            {},
            "schedule.rrule",
            "Z",
        ),
        (
            {"rrule": "DTSTART;TZID=UTC:20260101T020000\nRRULE:FREQ=DAILY", "duration": "1h"},
            {},
            "schedule.rrule",
            "TZID",
        ),
        ({"start": "2026-12-25T02:00:00", "end": "2026-12-24T22:00:00"}, {}, "schedule", "after"),
        ({"start": "2026-12-25T02:00:00"}, {}, "schedule", "end or duration"),
        (
            {"cron": "0 2 * * 0", "rrule": "FREQ=DAILY", "duration": "1h"},
            {},
            "schedule",
            "exactly one",
        ),
        ({"cron": "0 * * * *", "duration": "2h"}, {}, "schedule.duration", "longer than"),
        (
            {"start": "2026-12-24T22:00:00", "duration": "1h"},
            {"exclusions": [{"date": "2026-12-24"}]},
            "exclusions",
            "excluded",
        ),
        (
            {"cron": "0 2 * * 0", "duration": "1h"},
            {"exclusions": [{"start": "2026-12-24"}]},
            "exclusions[0]",
            "start and end",
        ),
        (
            {"cron": "0 2 * * 0", "duration": "1h"},
            {"exclusions": [{"start": "2026-12-24", "end": "2026-12-20"}]},
            "exclusions[0]",
            "before",
        ),
    ],
)
def test_bad_schedules_name_the_field(
    schedule: dict[str, Any], extra: dict[str, Any], field: str, words: str
) -> None:
    body = {"schedule": schedule, "timeZone": "Europe/Berlin", **extra}
    with pytest.raises(InvalidSpec) as info:
        from_spec(parse(MaintenanceWindowSpec, body), NOW)
    assert info.value.field == field, info.value
    assert words.lower() in str(info.value).lower()


def test_overlap_only_on_the_spring_forward_day_is_refused() -> None:
    # 01:30 daily for 23h30m: 24h apart except the 23h day when clocks jump forward.
    body = {"schedule": {"cron": "30 1 * * *", "duration": "23h30m"}, "timeZone": "Europe/Berlin"}
    with pytest.raises(InvalidSpec, match="longer than"):
        from_spec(parse(MaintenanceWindowSpec, body), NOW)
    # The same in UTC (no DST) is fine.
    body["timeZone"] = "UTC"
    assert from_spec(parse(MaintenanceWindowSpec, body), NOW).duration == timedelta(hours=23.5)


def test_naive_instants_are_refused() -> None:
    rec = build({"cron": "0 2 * * 0", "duration": "2h"})
    with pytest.raises(ValueError, match="aware"):
        rec.next_after(datetime(2026, 1, 1))


# -- resolve_local ---------------------------------------------------------------------------


def test_resolve_local_gap_and_fold() -> None:
    assert resolve_local(datetime(2026, 3, 29, 2, 30), BERLIN) == utc(2026, 3, 29, 1)
    assert resolve_local(datetime(2026, 10, 25, 2, 30), BERLIN) == utc(2026, 10, 25, 0, 30)
    assert resolve_local(datetime(2026, 7, 1, 12), BERLIN) == utc(2026, 7, 1, 10)


def test_occurrence_id_is_the_utc_start() -> None:
    assert occ(utc(2026, 3, 29, 1), 2).id == "202603290100"
