"""Window state: level-triggered decisions from clock + spec + recorded status."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stronghold_operator.logic import window as w
from stronghold_operator.logic.recurrence import Recurrence, from_spec
from stronghold_operator.models.base import parse
from stronghold_operator.models.maintenance import (
    MaintenanceWindowSpec,
    holders,
    with_holder,
    without_holder,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)
# Sunday 1 March 2026 02:00-04:00 Berlin = 01:00-03:00 UTC; next on 8 March.
START = datetime(2026, 3, 1, 1, tzinfo=UTC)
END = datetime(2026, 3, 1, 3, tzinfo=UTC)
MIN = timedelta(minutes=1)


def make(**over: Any) -> tuple[MaintenanceWindowSpec, Recurrence]:
    body: dict[str, Any] = {
        "schedule": {"cron": "0 2 * * 0", "duration": "2h"},
        "timeZone": "Europe/Berlin",
        "preChecks": {"leadTime": "30m", "backup": {"backupSchedule": "db"}},
    }
    body.update(over)
    spec = parse(MaintenanceWindowSpec, body)
    return spec, from_spec(spec, T0 - timedelta(days=1))


class Sim:
    """Drives decide() like the handler does: decide, do the step, record, decide again."""

    def __init__(
        self,
        spec: MaintenanceWindowSpec,
        rec: Recurrence,
        pre_ok: bool = True,
        post_ok: bool = True,
        pre_ticks: int = 0,
        post_ticks: int = 0,
    ) -> None:
        self.spec, self.rec = spec, rec
        self.pre_ok, self.post_ok, self.pre_ticks = pre_ok, post_ok, pre_ticks
        self.post_ticks = post_ticks
        self._post_polls = 0
        self.progress: w.Progress | None = None
        self.history: list[w.HistoryEntry] = []
        self.events: list[w.Event] = []
        self.pre_started: list[str] = []
        self.post_started: list[str] = []
        self.frozen = False
        self.last: w.Decision | None = None
        self._pre_polls = 0

    def tick(self, now: datetime, manual: w.Manual | None = None) -> w.Decision:
        manual = manual or w.Manual()
        for _ in range(8):
            d = w.decide(self.spec, self.rec, now, self.progress, self.history, manual, "weekly")
            manual = w.Manual()  # handled once
            self.events += d.events
            p = d.progress
            if d.finished is not None:
                self.history = w.record_history(self.history, d.finished, self.spec.history_limit)
            if d.run_pre_checks and p is not None:
                if p.pre_checks == "Pending":
                    self.pre_started.append(p.id)
                    p = w.pre_checks_started(p, now)
                    self._pre_polls = 0
                elif self._pre_polls >= self.pre_ticks:
                    p = w.pre_checks_done(p, self.pre_ok, "ok" if self.pre_ok else "backup failed")
                else:
                    self._pre_polls += 1
            if d.run_post_checks and p is not None:
                if p.post_checks == "Pending":
                    self.post_started.append(p.id)
                    p = w.post_checks_started(p, now)
                    self._post_polls = 0
                elif self._post_polls < self.post_ticks:
                    self._post_polls += 1
                else:
                    p = w.post_checks_done(p, self.post_ok, "ok" if self.post_ok else "not ok")
            changed = p != self.progress or d.finished is not None
            self.progress = p
            self.frozen = d.freeze
            self.last = d
            if not changed:
                break
        assert self.last is not None
        return self.last

    def conditions(self) -> dict[str, tuple[str, str]]:
        assert self.last is not None
        return {c.type: (c.status, c.reason) for c in self.last.conditions}


def test_idle_long_before_the_window() -> None:
    spec, rec = make()
    d = w.decide(spec, rec, T0 - timedelta(days=2), None)
    assert d.stage == w.Stage.IDLE and d.progress is None and not d.freeze
    assert d.next_window is not None and d.next_window.start == START
    conds = {c.type: c for c in d.conditions}
    assert conds["Scheduled"].status == "True"
    assert "2026-03-01T02:00:00+01:00" in conds["Scheduled"].message
    assert conds["Active"].status == "False"
    assert {c.type for c in d.conditions} == set(w.CONDITION_TYPES)


def test_full_lifecycle_with_lead_time() -> None:
    spec, rec = make()
    sim = Sim(spec, rec, post_ticks=1)
    sim.tick(START - 31 * MIN)
    assert sim.progress is None and sim.pre_started == []
    sim.tick(START - 30 * MIN)  # lead time reached: pre-checks run and pass
    assert sim.pre_started == [rec.next_after(T0).id]  # type: ignore[union-attr]
    assert sim.progress is not None and sim.progress.pre_checks == "Passed"
    assert not sim.frozen and sim.last.stage == w.Stage.WAITING  # type: ignore[union-attr]
    assert sim.conditions()["PreChecksPassed"] == ("True", "Passed")
    sim.tick(START)
    assert sim.frozen and sim.conditions()["Active"] == ("True", "WindowOpen")
    sim.tick(START + 90 * MIN)
    assert sim.frozen
    sim.tick(END)  # released and post-checks started
    assert not sim.frozen and sim.post_started == ["202603010100"]
    assert sim.conditions()["PostChecksPassed"] == ("Unknown", "Running")
    sim.tick(END + MIN)
    assert sim.progress is None
    assert [h.result for h in sim.history] == ["Succeeded"]
    assert sim.history[0].end_reason == "Scheduled"
    assert sim.conditions()["PostChecksPassed"] == ("True", "Passed")
    assert sim.conditions()["Active"] == ("False", "NotInWindow")
    reasons = [e.reason for e in sim.events]
    assert reasons.index("WindowScheduled") < reasons.index("WindowOpened")
    assert reasons.index("WindowOpened") < reasons.index("WindowEnded")
    assert reasons[-1] == "WindowSucceeded"
    # The next week is scheduled, not begun again.
    assert sim.last.next_window.start == START + timedelta(days=7)  # type: ignore[union-attr]


def test_waits_for_running_pre_checks_at_the_start() -> None:
    spec, rec = make()
    sim = Sim(spec, rec, pre_ticks=100)
    sim.tick(START - 10 * MIN)
    sim.tick(START + MIN)
    assert not sim.frozen
    assert sim.conditions()["Active"] == ("False", "WaitingForPreChecks")
    assert sim.conditions()["PreChecksPassed"] == ("Unknown", "Running")
    sim.pre_ticks = 0
    sim.tick(START + 2 * MIN)
    assert sim.frozen and sim.progress.opened_at == START + 2 * MIN  # type: ignore[union-attr]


def test_failed_pre_checks_skip_the_window_by_default() -> None:
    spec, rec = make()
    sim = Sim(spec, rec, pre_ok=False)
    sim.tick(START - 30 * MIN)
    sim.tick(START + MIN)
    assert not sim.frozen
    assert sim.conditions()["Active"] == ("False", "Skipped")
    assert sim.conditions()["PreChecksPassed"] == ("False", "Failed")
    assert any(e.reason == "WindowSkipped" and e.type == "Warning" for e in sim.events)
    sim.tick(END)
    assert sim.post_started == []  # nothing was frozen: nothing to check afterwards
    assert [(h.result, h.post_checks) for h in sim.history] == [("Skipped", "NotRun")]
    assert sim.pre_started == ["202603010100"]  # the failure is not retried automatically


def test_proceed_policy_freezes_despite_failed_pre_checks() -> None:
    spec, rec = make(onPreCheckFailure="Proceed")
    sim = Sim(spec, rec, pre_ok=False)
    sim.tick(START - 30 * MIN)
    sim.tick(START)
    assert sim.frozen
    sim.tick(END)
    sim.tick(END + MIN)
    assert sim.history[0].result == "Failed"  # the failed backup is not forgotten
    assert sim.history[0].pre_checks == "Failed"


def test_failed_post_checks_fail_the_window() -> None:
    spec, rec = make()
    sim = Sim(spec, rec, post_ok=False)
    for t in (START - 30 * MIN, START, END, END + MIN):
        sim.tick(t)
    assert sim.history[0].result == "Failed"
    assert sim.conditions()["PostChecksPassed"] == ("False", "Failed")


def test_operator_down_through_the_lead_time_runs_pre_checks_at_the_start() -> None:
    spec, rec = make()
    sim = Sim(spec, rec)
    sim.tick(START + 5 * MIN)
    assert sim.pre_started == ["202603010100"] and sim.frozen


def test_operator_down_through_the_whole_window_records_it_as_skipped() -> None:
    spec, rec = make()
    sim = Sim(spec, rec)
    sim.tick(START - 40 * MIN)
    sim.tick(END + 10 * MIN)  # no tick inside the window at all
    assert sim.pre_started == [] and not sim.frozen
    # Nothing began: the window is not in history (it never started for us), next is scheduled.
    assert sim.last.next_window.start == START + timedelta(days=7)  # type: ignore[union-attr]


def test_restart_mid_window_changes_nothing() -> None:
    spec, rec = make()
    sim = Sim(spec, rec)
    sim.tick(START - 30 * MIN)
    sim.tick(START + MIN)
    # A "restart": a new simulator that only knows what status recorded.
    tz = rec.tz
    recorded = w.Progress.from_status(sim.progress.to_status(tz))  # type: ignore[union-attr]
    assert recorded == sim.progress
    again = Sim(spec, rec)
    again.progress = recorded
    again.tick(START + 30 * MIN)
    assert again.frozen and again.pre_started == []
    assert not [e for e in again.events if e.reason in ("WindowOpened", "WindowScheduled")]
    again.tick(END)
    again.tick(END + MIN)
    # ... and after another restart past the end, post-checks are not run again.
    third = Sim(spec, rec)
    third.history = [w.HistoryEntry.from_status(h.to_status()) for h in again.history]
    third.tick(END + 5 * MIN)
    assert third.post_started == [] and third.pre_started == [] and third.progress is None


def test_a_failed_status_write_repeats_the_same_backup_request() -> None:
    spec, rec = make()
    d = w.decide(spec, rec, START - 30 * MIN, None)
    assert d.run_pre_checks and d.progress is not None
    first = w.backup_request_value("weekly", d.progress)
    # The status write failed: the next tick starts from nothing again.
    d2 = w.decide(spec, rec, START - 29 * MIN, None)
    assert w.backup_request_value("weekly", d2.progress) == first  # type: ignore[arg-type]
    assert first == "weekly-202603010100"


def test_end_now_ends_the_window_early_and_runs_post_checks_once() -> None:
    spec, rec = make()
    sim = Sim(spec, rec)
    sim.tick(START - 30 * MIN)
    sim.tick(START + 10 * MIN)
    sim.tick(START + 20 * MIN, w.Manual(end_now=True))
    assert not sim.frozen
    sim.tick(START + 21 * MIN)
    assert sim.history[0].end_reason == "EndNow"
    assert sim.history[0].ended_at == START + 20 * MIN
    sim.tick(START + 60 * MIN)  # still inside the scheduled time: not begun again
    assert not sim.frozen and sim.post_started == ["202603010100"]
    assert sim.pre_started == ["202603010100"]


def test_end_now_without_an_open_window_is_ignored_with_a_warning() -> None:
    spec, rec = make()
    sim = Sim(spec, rec)
    sim.tick(T0 - timedelta(days=3), w.Manual(end_now=True))
    assert [e.reason for e in sim.events] == ["EndNowIgnored"]


def test_precheck_now_runs_pre_checks_days_ahead_and_again_at_lead_time() -> None:
    spec, rec = make()
    sim = Sim(spec, rec)
    sim.tick(START - timedelta(days=3), w.Manual(precheck_now=True))
    assert sim.pre_started == ["202603010100"]
    assert sim.progress is not None and sim.progress.pre_checks == "Passed"
    assert sim.conditions()["PreChecksPassed"] == ("True", "Passed")
    assert sim.conditions()["Scheduled"] == ("True", "NextWindow")
    sim.tick(START - timedelta(days=1))  # nothing new in between
    assert sim.pre_started == ["202603010100"]
    sim.tick(START - 30 * MIN)  # the real run, with a fresh backup request
    assert sim.pre_started == ["202603010100", "202603010100"]
    assert sim.progress is not None and sim.progress.attempt == 2
    assert w.backup_request_value("weekly", sim.progress) == "weekly-202603010100-2"
    sim.tick(START)
    assert sim.frozen


def test_precheck_now_reruns_failed_pre_checks_with_a_new_backup_request() -> None:
    spec, rec = make()
    sim = Sim(spec, rec, pre_ok=False)
    sim.tick(START - 30 * MIN)
    first = w.backup_request_value("weekly", sim.progress)  # type: ignore[arg-type]
    sim.pre_ok = True
    sim.tick(START - 20 * MIN, w.Manual(precheck_now=True))
    assert sim.progress is not None and sim.progress.pre_checks == "Passed"
    assert sim.progress.attempt == 2
    assert w.backup_request_value("weekly", sim.progress) != first
    sim.tick(START)
    assert sim.frozen


def test_precheck_now_during_an_open_window_is_ignored() -> None:
    spec, rec = make()
    sim = Sim(spec, rec)
    sim.tick(START - 30 * MIN)
    sim.tick(START + MIN)
    sim.tick(START + 2 * MIN, w.Manual(precheck_now=True))
    assert sim.frozen and sim.pre_started == ["202603010100"]
    assert sim.events[-1].reason == "PreCheckNowIgnored"


def test_suspend_prevents_new_windows() -> None:
    spec, rec = make(suspend=True)
    sim = Sim(spec, rec)
    sim.tick(START + MIN)
    assert not sim.frozen and sim.progress is None
    assert sim.conditions()["Scheduled"] == ("False", "Suspended")


def test_no_pre_checks_configured_opens_at_the_start() -> None:
    spec, rec = make(preChecks={"snapshot": False})
    sim = Sim(spec, rec)
    sim.tick(START - 10 * MIN)
    assert sim.progress is None  # no lead time without pre-checks
    sim.tick(START)
    assert sim.frozen and sim.pre_started == []
    assert sim.conditions()["PreChecksPassed"] == ("True", "NotRequired")


def test_a_longer_duration_applies_to_the_open_window() -> None:
    spec, rec = make()
    sim = Sim(spec, rec)
    sim.tick(START - 30 * MIN)
    sim.tick(START + MIN)
    longer, rec2 = make(schedule={"cron": "0 2 * * 0", "duration": "3h"})
    sim.spec, sim.rec = longer, rec2
    sim.tick(END + 30 * MIN)
    assert sim.frozen and sim.progress.end == END + 60 * MIN  # type: ignore[union-attr]


def test_schedule_finished_is_not_scheduled() -> None:
    spec, rec = make(schedule={"start": "2026-02-01T02:00:00", "duration": "1h"})
    d = w.decide(spec, rec, T0, None)
    conds = {c.type: c for c in d.conditions}
    assert conds["Scheduled"].status == "False" and conds["Scheduled"].reason == "NoUpcomingWindow"
    assert conds["Ready"].status == "True"


def test_history_is_bounded_newest_first_and_unique() -> None:
    spec, rec = make(historyLimit=3)
    sim = Sim(spec, rec)
    for week in range(5):
        base = START + timedelta(days=7 * week)
        for t in (base - 30 * MIN, base, base + 3 * timedelta(hours=1), base + timedelta(hours=4)):
            sim.tick(t)
    ids = [h.id for h in sim.history]
    assert len(ids) == 3 and ids == sorted(ids, reverse=True)
    entry = sim.history[0]
    assert w.record_history(sim.history, entry, 3)[0] == entry
    assert len(w.record_history(sim.history, entry, 3)) == 3


def test_status_round_trip_and_window_times() -> None:
    _, rec = make()
    occ = rec.next_after(T0)
    assert occ is not None
    p = replace(w.Progress.begin(occ), backup="db-202603010030", snapshot="weekly-snap")
    out = p.to_status(rec.tz)
    assert out["startLocal"] == "2026-03-01T02:00:00+01:00"
    assert out["start"] == "2026-03-01T01:00:00Z"
    assert w.Progress.from_status(out) == p
    assert w.Progress.from_status({}) is None
    assert "endedAt" not in out  # None values are left out, not written as null


# -- waiting on the backup and the health policies ------------------------------------------


def rec_(
    name: str,
    started: datetime | None,
    verified: bool | None,
    failed: bool = False,
    trigger: str | None = None,
) -> w.BackupRecord:
    return w.BackupRecord(name, started, None, verified, failed, trigger)


def test_backup_outcome_matches_by_trigger_value_first() -> None:
    asked = START - 30 * MIN
    records = [
        rec_("old", asked - timedelta(days=1), True),
        rec_("other", asked + MIN, True, trigger="someone-else"),
        rec_("ours", asked + MIN, None, trigger="req"),
    ]
    out = w.backup_outcome(records, "req", asked, asked + 2 * MIN, timedelta(minutes=30))
    assert out.state == "Waiting"
    records[2] = rec_("ours", asked + MIN, True, trigger="req")
    out = w.backup_outcome(records, "req", asked, asked + 3 * MIN, timedelta(minutes=30))
    assert (out.state, out.backup) == ("Verified", "ours")


def test_backup_outcome_by_start_time_failure_and_timeout() -> None:
    asked = START - 30 * MIN
    old = rec_("old", asked - timedelta(hours=3), True)
    assert w.backup_outcome([old], "r", asked, asked + MIN, timedelta(minutes=5)).state == "Waiting"
    timed_out = w.backup_outcome([old], "r", asked, asked + 6 * MIN, timedelta(minutes=5))
    assert timed_out.state == "TimedOut"
    bad = rec_("new", asked + MIN, False, failed=True)
    assert w.backup_outcome([old, bad], "r", asked, asked + 2 * MIN, MIN * 5).state == "Failed"


def test_backup_outcome_acknowledged_request_is_answered_by_the_running_backup() -> None:
    asked = START - 30 * MIN
    running = w.BackupRecord("sched", asked - MIN, None, None, False, "scheduled")
    done = w.BackupRecord("sched", asked - MIN, asked + 5 * MIN, True, False, "scheduled")
    assert w.backup_outcome([running], "r", asked, asked + MIN, 30 * MIN).state == "Waiting"
    # Not acknowledged: a scheduled backup is not ours.
    assert w.backup_outcome([done], "r", asked, asked + 6 * MIN, 30 * MIN).state == "Waiting"
    out = w.backup_outcome([done], "r", asked, asked + 6 * MIN, 30 * MIN, acknowledged=True)
    assert (out.state, out.backup) == ("Verified", "sched")


def test_health_outcome_needs_a_fresh_healthy_probe() -> None:
    released = END
    stale = w.HealthReading("web", True, released - MIN)
    fresh = w.HealthReading("web", True, released + MIN)
    sick = w.HealthReading("db", False, released + MIN, "P1")
    assert w.health_outcome([stale], released, released + MIN, 10 * MIN).state == "Waiting"
    assert w.health_outcome([fresh], released, released + MIN, 10 * MIN).state == "Passed"
    failed = w.health_outcome([fresh, sick], released, released + 11 * MIN, 10 * MIN)
    assert failed.state == "Failed" and failed.failures == ("db",)
    assert w.health_outcome([], released, released, 10 * MIN).state == "Passed"


# -- the maintenance annotation value ----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "name", "added", "removed"),
    [
        (None, "a", "a", None),
        ("", "a", "a", None),
        ("a", "a", "a", None),
        ("b", "a", "a,b", "b"),
        ("c, a ,b", "a", "a,b,c", "b,c"),
        ("manual-hold", "w", "manual-hold,w", "manual-hold"),
    ],
)
def test_annotation_holders(value: str | None, name: str, added: str, removed: str | None) -> None:
    assert with_holder(value, name) == added
    assert without_holder(value, name) == removed
    assert holders(with_holder(value, name)) == sorted(set(holders(value)) | {name})


# -- reading the other kinds' status -------------------------------------------------------------


def test_backup_records_read_backupschedule_status_entries() -> None:
    from stronghold_operator.logic import backup as lb

    ok = lb.backup_entry(
        "db-202603010030",
        lb.JobResult(
            True,
            "backup",
            {
                "verified": True,
                "file": "db_backup_20260301_003000.sql.gz",
                "started": "2026-03-01T00:30:00Z",
                "completed": "2026-03-01T00:31:00Z",
            },
        ),
    )
    ok["trigger"] = "weekly-202603010100"
    bad = lb.backup_entry("db-202603010040", None, ("DeadlineExceeded", "too slow"))
    bad["trigger"] = "scheduled"
    records = w.backup_records({"backups": [ok, bad, "junk"]})
    assert records[0] == w.BackupRecord(
        "db-202603010030",
        datetime(2026, 3, 1, 0, 30, tzinfo=UTC),
        datetime(2026, 3, 1, 0, 31, tzinfo=UTC),
        True,
        False,
        "weekly-202603010100",
        "",
    )
    assert records[1].failed and records[1].verified is False
    assert records[1].message == "too slow"
    out = w.backup_outcome(records, "weekly-202603010100", START - 31 * MIN, START, 30 * MIN)
    assert (out.state, out.backup) == ("Verified", "db-202603010030")
    assert w.backup_records({}) == []


def test_health_readings_from_healthpolicy_objects() -> None:
    hp = {
        "metadata": {"name": "stack"},
        "status": {
            "conditions": [{"type": "Healthy", "status": "True", "reason": "AllChecksHealthy"}],
            "lastProbeTime": "2026-03-01T03:00:05Z",
            "severity": "None",
        },
    }
    fresh = {"metadata": {"name": "new"}}
    readings = w.health_readings([hp, fresh])
    assert readings[0] == w.HealthReading(
        "stack", True, datetime(2026, 3, 1, 3, 0, 5, tzinfo=UTC), "None"
    )
    assert readings[1] == w.HealthReading("new", False, None, None)
    assert w.health_outcome(readings[:1], END, END + MIN, 10 * MIN).state == "Passed"
    assert w.health_outcome(readings, END, END + MIN, 10 * MIN).state == "Waiting"


def test_merge_patch_matches_status_delta() -> None:
    from stronghold_operator.conditions import merge_patch, status_delta

    cur = {
        "currentWindow": {"id": "1", "preChecks": {"state": "Running", "message": "w"}},
        "history": [{"id": "0"}],
        "kept": 1,
    }
    desired = {"currentWindow": {"id": "1", "preChecks": {"state": "Passed"}}, "history": []}
    after = merge_patch(cur, status_delta(cur, desired))
    assert after == {**desired, "kept": 1}
    assert status_delta(after, desired) == {}  # nothing left to write
    assert merge_patch(after, {"currentWindow": None}) == {"history": [], "kept": 1}
