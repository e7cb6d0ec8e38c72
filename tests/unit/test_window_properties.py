"""Property tests of the window state machine over random clocks, restarts and outcomes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stronghold_operator.logic import window as w
from stronghold_operator.logic.recurrence import Recurrence, from_spec
from stronghold_operator.models.base import parse
from stronghold_operator.models.maintenance import MaintenanceWindowSpec

T0 = datetime(2026, 3, 20, tzinfo=UTC)  # spring-forward week in Berlin and after
SPECS = [
    {"schedule": {"cron": "0 2 * * 0", "duration": "2h"}, "timeZone": "Europe/Berlin"},
    {
        "schedule": {"rrule": "FREQ=DAILY;BYHOUR=1;BYMINUTE=30", "duration": "1h"},
        "timeZone": "America/New_York",
    },
    {
        "schedule": {"cron": "0 23 * * *", "duration": "3h"},
        "timeZone": "Europe/Berlin",
        "exclusions": [{"date": "2026-03-25"}],
    },
]
_built: dict[tuple[int, str, str], tuple[MaintenanceWindowSpec, Recurrence]] = {}


def build(i: int, policy: str, lead: str) -> tuple[MaintenanceWindowSpec, Recurrence]:
    key = (i, policy, lead)
    if key not in _built:
        body = {
            **SPECS[i],
            "onPreCheckFailure": policy,
            "preChecks": {"leadTime": lead, "backup": {"backupSchedule": "db"}},
        }
        spec = parse(MaintenanceWindowSpec, body)
        _built[key] = (spec, from_spec(spec, T0))
    return _built[key]


tick_gaps = st.lists(st.integers(1, 180), min_size=5, max_size=120)  # minutes between ticks
outcomes = st.lists(st.booleans(), min_size=1, max_size=20)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(0, len(SPECS) - 1),
    st.sampled_from(["Skip", "Proceed"]),
    st.sampled_from(["0s", "15m", "2h"]),
    tick_gaps,
    outcomes,
    st.lists(st.integers(0, 3), min_size=1, max_size=20),
    st.lists(st.sampled_from(["none", "none", "none", "end", "pre", "restart"]), min_size=1),
)
def test_invariants_over_random_runs(
    i: int,
    policy: str,
    lead: str,
    gaps: list[int],
    pre_results: list[bool],
    polls: list[int],
    actions: list[str],
) -> None:
    spec, rec = build(i, policy, lead)
    progress: w.Progress | None = None
    history: list[w.HistoryEntry] = []
    pre_runs: dict[tuple[str, int], int] = {}
    post_runs: dict[str, int] = {}
    waited = 0
    now = T0
    for n, gap in enumerate(gaps):
        now += timedelta(minutes=gap)
        action = actions[n % len(actions)]
        if action == "restart" and progress is not None:
            # Only what status recorded survives a restart.
            progress = w.Progress.from_status(progress.to_status(rec.tz))
            history = [w.HistoryEntry.from_status(h.to_status()) for h in history]
        manual = w.Manual(end_now=action == "end", precheck_now=action == "pre")
        freeze = False
        for _ in range(10):
            d = w.decide(spec, rec, now, progress, history, manual, "mw")
            manual = w.Manual()
            p = d.progress
            if d.finished is not None:
                assert d.finished.id not in {h.id for h in history}  # finished only once
                history = w.record_history(history, d.finished, 50)
            if d.run_pre_checks and p is not None:
                if p.pre_checks == "Pending":
                    key = (p.id, p.attempt)
                    pre_runs[key] = pre_runs.get(key, 0) + 1
                    p = w.pre_checks_started(p, now)
                    waited = 0
                elif waited >= polls[n % len(polls)]:
                    ok = pre_results[n % len(pre_results)]
                    p = w.pre_checks_done(p, ok, "ok" if ok else "failed")
                else:
                    waited += 1
            if d.run_post_checks and p is not None:
                if p.post_checks == "Pending":
                    post_runs[p.id] = post_runs.get(p.id, 0) + 1
                    p = w.post_checks_started(p, now)
                else:
                    p = w.post_checks_done(p, True, "ok")
            settled = p == progress and d.finished is None
            progress = p
            freeze = d.freeze
            if settled:
                break

        # Frozen only inside the occurrence being handled, after a pass or with Proceed.
        if freeze:
            assert progress is not None and progress.start <= now < progress.end
            assert not progress.ended
            assert progress.pre_checks in ("Passed", "NotRequired") or policy == "Proceed"
            cur = rec.current(now)
            assert cur is not None and cur.id == progress.id
        # A window in progress is never one already in history.
        if progress is not None:
            assert progress.id not in {h.id for h in history}
        # Conditions are always the full set, each with a one-word reason.
        types = [c.type for c in d.conditions]
        assert sorted(types) == sorted(w.CONDITION_TYPES)
        assert all(c.reason.isalnum() for c in d.conditions)

    # Each pre-check attempt started once; post-checks once per window.
    assert all(count == 1 for count in pre_runs.values())
    assert all(count == 1 for count in post_runs.values())
    # History is newest first and unique.
    ids = [h.id for h in history]
    assert ids == sorted(set(ids), reverse=True)
    for h in history:
        assert h.result in ("Succeeded", "Failed", "Skipped")
        if h.result == "Skipped":
            assert h.post_checks == "NotRun"


def test_ticking_every_ten_minutes_for_two_weeks_freezes_each_window_once() -> None:
    spec, rec = build(0, "Skip", "15m")
    progress: w.Progress | None = None
    history: list[w.HistoryEntry] = []
    frozen_at: list[datetime] = []
    now = T0
    while now < T0 + timedelta(days=14):
        for _ in range(10):
            d = w.decide(spec, rec, now, progress, history)
            p = d.progress
            if d.finished is not None:
                history = w.record_history(history, d.finished, 10)
            if d.run_pre_checks and p is not None:
                p = (
                    w.pre_checks_started(p, now)
                    if p.pre_checks == "Pending"
                    else w.pre_checks_done(p, True, "ok")
                )
            if d.run_post_checks and p is not None:
                p = (
                    w.post_checks_started(p, now)
                    if p.post_checks == "Pending"
                    else w.post_checks_done(p, True, "ok")
                )
            done = p == progress and d.finished is None
            progress = p
            if done:
                break
        if d.freeze:
            frozen_at.append(now)
        now += timedelta(minutes=10)
    # 22 March (CET) and 29 March (spring forward: 03:00-05:00 CEST), 2h each = 12 ticks each.
    assert [h.start for h in reversed(history)] == [
        datetime(2026, 3, 22, 1, tzinfo=UTC),
        datetime(2026, 3, 29, 1, tzinfo=UTC),
    ]
    assert all(h.result == "Succeeded" for h in history)
    assert len(frozen_at) == 24
    assert all(rec.current(t) is not None for t in frozen_at)
