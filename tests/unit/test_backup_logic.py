"""BackupSchedule decisions with an injected clock: schedule, retention, results, status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stronghold_operator.logic import backup as lb
from stronghold_operator.logic.cron import CronSchedule
from stronghold_operator.models.backup import BackupScheduleSpec
from stronghold_operator.models.base import InvalidSpec, parse

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
SPEC: dict[str, Any] = {
    "schedule": "0 2 * * *",
    "database": {"host": "127.0.0.1", "name": "app", "user": "app"},
    "storage": {"persistentVolumeClaim": "backups"},
}


def decide(expr: str = "*/5 * * * *", **kw: Any) -> lb.Decision:
    args: dict[str, Any] = {
        "name": "nightly",
        "kind": "backup",
        "now": T0,
        "created": T0 - timedelta(days=1),
        "cursor": T0 - timedelta(minutes=5),
        "suspend": False,
        "policy": "Forbid",
        "deadline": None,
        "active": (),
        "done": (),
    }
    args.update(kw)
    return lb.decide(CronSchedule.parse(expr, "UTC"), **args)


# -- spec -----------------------------------------------------------------------------------


def test_spec_defaults_follow_the_guide() -> None:
    spec = parse(BackupScheduleSpec, SPEC)
    assert (spec.retention.days, spec.retention.min_keep) == (30, 3)
    assert spec.stale_after == timedelta(hours=26)
    assert (spec.format, spec.concurrency_policy, spec.time_zone) == ("plain", "Forbid", "UTC")
    assert spec.job_template.run_as_user == 999


def test_invalid_cron_and_zone_name_the_field() -> None:
    bad_cron = parse(BackupScheduleSpec, SPEC | {"schedule": "0 25 * * *"})
    with pytest.raises(InvalidSpec, match=r"spec\.schedule: .*out of range"):
        lb.compile_schedules(bad_cron)
    bad_zone = parse(BackupScheduleSpec, SPEC | {"timeZone": "Europe/Atlantis"})
    with pytest.raises(InvalidSpec, match=r"spec\.timeZone: unknown time zone 'Europe/Atlantis'"):
        lb.compile_schedules(bad_zone)
    bad_rt = parse(
        BackupScheduleSpec, SPEC | {"verify": {"restoreTest": {"schedule": "every month"}}}
    )
    with pytest.raises(InvalidSpec, match=r"spec\.verify\.restoreTest\.schedule"):
        lb.compile_schedules(bad_rt)


def test_spec_refuses_unsafe_values() -> None:
    with pytest.raises(InvalidSpec, match=r"database\.name"):
        parse(BackupScheduleSpec, SPEC | {"database": {"host": "h", "name": "a;b", "user": "u"}})
    with pytest.raises(InvalidSpec, match=r"storage\.path"):
        parse(
            BackupScheduleSpec, SPEC | {"storage": {"persistentVolumeClaim": "b", "path": "../x"}}
        )
    with pytest.raises(InvalidSpec, match="tables"):
        parse(BackupScheduleSpec, SPEC | {"verify": {"restoreTest": {"tables": ["a; drop"]}}})


# -- names ----------------------------------------------------------------------------------


def test_job_names_are_deterministic_and_fit() -> None:
    slot = datetime(2026, 5, 1, 2, 0, tzinfo=UTC)
    assert lb.job_name("nightly", slot) == "nightly-202605010200"
    assert lb.job_name("nightly", slot, "restore-test") == "nightly-restoretest-202605010200"
    long = "a" * 80
    n1, n2 = lb.job_name(long, slot), lb.job_name(long + "b", slot)
    assert len(n1) <= 63 and len(n2) <= 63 and n1 != n2
    assert n1.endswith("-202605010200") and n1 == lb.job_name(long, slot)


@given(st.from_regex(r"[a-z0-9]([a-z0-9-]{0,250}[a-z0-9])?", fullmatch=True))
def test_job_name_is_a_valid_label_value(name: str) -> None:
    got = lb.job_name(name, T0, "verify")
    assert len(got) <= 63
    assert got[0].isalnum() and got[-1].isalnum()


def test_scratch_database_name_fits_identifier_limit() -> None:
    assert lb.scratch_database("app", T0) == "app_restoretest_20260501120000"
    assert len(lb.scratch_database("x" * 63, T0)) == 63


# -- schedule decisions ---------------------------------------------------------------------


def test_due_slot_starts_once() -> None:
    d = decide()
    assert d.start == lb.Start("nightly-202605011200", "backup", T0, "scheduled")
    assert d.cursor == T0 and d.next_run == T0 + timedelta(minutes=5)
    again = decide(cursor=None, done={"nightly-202605011200"})
    assert again.start is None and again.cursor == T0


def test_active_job_with_same_name_is_adopted_not_duplicated() -> None:
    d = decide(cursor=T0 - timedelta(minutes=5), active=["nightly-202605011200"])
    assert d.start is None and d.cursor == T0


def test_forbid_keeps_slot_pending_replace_replaces() -> None:
    running = ["nightly-202605011155"]
    f = decide(active=running)
    assert f.start is None and f.waiting and f.cursor == T0 - timedelta(minutes=5)
    r = decide(active=running, policy="Replace")
    assert r.start is not None and r.replace == tuple(running)


def test_missed_slots_one_catch_up_within_deadline() -> None:
    d = decide(
        cursor=T0 - timedelta(hours=2),
        now=T0 + timedelta(minutes=3),
        deadline=timedelta(minutes=10),
    )
    assert d.start is not None and d.start.slot == T0 and d.start.trigger == "catch-up"
    assert d.missed is not None and d.missed.missed == 24 and d.missed.skipped == 23
    late = decide(
        cursor=T0 - timedelta(hours=2), now=T0 + timedelta(minutes=4), deadline=timedelta(minutes=3)
    )
    assert late.start is None and late.cursor == T0 and late.missed is not None
    assert late.missed.skipped == 24


def test_suspend_skips_slots_but_on_demand_runs() -> None:
    d = decide(suspend=True)
    assert d.start is None and d.cursor == T0
    od = decide(suspend=True, cursor=T0, now=T0 + timedelta(seconds=70), request="r1")
    assert od.start is not None and od.start.trigger == "on-demand" and od.request_taken == "r1"
    assert od.start.name.startswith("nightly-202605011201-") and len(od.start.name) == 26
    handled = decide(cursor=T0, now=T0 + timedelta(seconds=70), request="r1", handled_request="r1")
    assert handled.start is None


def test_on_demand_answered_by_the_scheduled_start() -> None:
    d = decide(request="now-please")
    assert d.start is not None and d.start.trigger == "scheduled"
    assert d.request_taken == "now-please"


def test_on_demand_in_a_minute_whose_slot_already_ran_still_runs() -> None:
    d = decide(cursor=T0 - timedelta(minutes=5), done={"nightly-202605011200"}, request="mw-1")
    assert d.start is not None and d.start.trigger == "on-demand" and d.request_taken == "mw-1"
    assert d.cursor == T0
    # A Job already carries the request (operator restarted before writing status): adopt.
    again = decide(cursor=T0, request="mw-1", answered={"mw-1"}, now=T0 + timedelta(minutes=3))
    assert again.start is None and again.request_taken == "mw-1"


def test_on_demand_waits_behind_forbid() -> None:
    d = decide(cursor=T0, now=T0 + timedelta(seconds=30), request="x", active=["nightly-1"])
    assert d.start is None and d.request_taken is None and d.waiting


@settings(max_examples=80, deadline=None)
@given(
    minutes=st.lists(st.integers(min_value=0, max_value=600), min_size=1, max_size=30),
    policy=st.sampled_from(["Forbid", "Replace"]),
)
def test_simulated_ticks_never_start_a_slot_twice(minutes: list[int], policy: str) -> None:
    """Drive decide() like the handler does, with a random clock; every name is new."""
    sched = CronSchedule.parse("*/7 * * * *", "Europe/Berlin")
    cursor: datetime | None = None
    done: set[str] = set()
    started: list[str] = []
    now = T0
    for m in sorted(minutes):
        now = T0 + timedelta(minutes=m, seconds=13)
        d = lb.decide(
            sched,
            name="s",
            kind="backup",
            now=now,
            created=T0,
            cursor=cursor,
            suspend=False,
            policy=policy,  # type: ignore[arg-type]
            deadline=timedelta(minutes=3),
            active=(),
            done=done,
        )
        if d.start:
            assert d.start.name not in done
            assert now - d.start.slot <= timedelta(minutes=3)
            started.append(d.start.name)
            done.add(d.start.name)
        cursor = d.cursor or cursor
    assert len(started) == len(set(started))


# -- results and status ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "error", "reason"),
    [
        ("dump", 'FATAL:  password authentication failed for user "app"', "AuthFailed"),
        ("dump", 'FATAL:  database "nope" does not exist', "DatabaseNotFound"),
        (
            "dump",
            "connection to server at 127.0.0.1, port 1 failed: Connection refused",
            "ConnectionFailed",
        ),
        ("dump", "gzip: write error: No space left on device", "StorageFull"),
        ("verify", "unexpected end of file", "VerificationFailed"),
        ("restore", "ERROR: syntax error", "RestoreFailed"),
    ],
)
def test_classify(stage: str, error: str, reason: str) -> None:
    assert lb.classify(stage, error) == reason


def test_parse_result_and_entry() -> None:
    msg = (
        '{"ok": true, "kind": "backup", "file": "db_backup_20260501_020000.sql.gz", '
        '"size": 10, "sha256": "ab", "verified": true, "started": "s", "completed": "c"}'
    )
    r = lb.parse_result(msg)
    assert r is not None and r.ok
    e = lb.backup_entry("n-1", r)
    assert e["file"] == "db_backup_20260501_020000.sql.gz" and e["verified"] is True
    bad = lb.parse_result(
        '{"ok": false, "stage": "dump", "file": "tmp", '
        '"error": "FATAL: database \\"x\\" does not exist"}'
    )
    assert bad is not None
    e2 = lb.backup_entry("n-2", bad)
    assert e2["reason"] == "DatabaseNotFound" and "file" not in e2
    assert lb.parse_result("not json") is None and lb.parse_result(None) is None
    gone = lb.backup_entry("n-3", None, ("JobVanished", "deleted while the operator was away"))
    assert gone["result"] == "Failed" and gone["reason"] == "JobVanished"


def ok_entry(name: str, hours_ago: float, verified: bool = True) -> dict[str, Any]:
    t = (T0 - timedelta(hours=hours_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "name": name,
        "result": "Succeeded",
        "file": f"{name}.sql.gz",
        "verified": verified,
        "completedAt": t,
        "sha256": "f" * 64,
        "sizeBytes": 1,
    }


def test_summarize_healthy_and_stale() -> None:
    conds, last = lb.summarize(
        [ok_entry("a", 1)], None, False, T0 - timedelta(days=9), T0, timedelta(hours=26)
    )
    by = {c.type: c for c in conds}
    assert by["Ready"].status == "True" and by["BackupStale"].status == "False"
    assert by["RestoreTestPassed"].reason == "NotConfigured"
    assert last == T0 - timedelta(hours=1)
    conds, _ = lb.summarize(
        [ok_entry("a", 30)], None, False, T0 - timedelta(days=9), T0, timedelta(hours=26)
    )
    by = {c.type: c for c in conds}
    assert by["BackupStale"].status == "True" and by["Ready"].status == "False"


def test_summarize_newest_unverified_makes_backup_verified_false() -> None:
    history = lb.apply_verification(
        [ok_entry("new", 1), ok_entry("old", 2)],
        failed={"new.sql.gz": ("ChecksumMismatch", "sha256 differs")},
        passed={"old.sql.gz"},
        pruned=(),
    )
    conds, last = lb.summarize(
        history, None, False, T0 - timedelta(days=9), T0, timedelta(hours=26)
    )
    by = {c.type: c for c in conds}
    assert (
        by["BackupVerified"].status == "False" and by["BackupVerified"].reason == "ChecksumMismatch"
    )
    assert by["BackupStale"].status == "False"  # the older verified one is fresh enough
    assert last == T0 - timedelta(hours=2)
    assert lb.protected_files(history, 3) == ["old.sql.gz"]


def test_summarize_failure_and_blocked() -> None:
    failed = {
        "name": "b",
        "result": "Failed",
        "reason": "AuthFailed",
        "message": "password authentication failed",
    }
    conds, _ = lb.summarize([failed, ok_entry("a", 1)], None, False, T0, T0, timedelta(hours=26))
    by = {c.type: c for c in conds}
    assert by["LastBackupSucceeded"].reason == "AuthFailed" and by["Ready"].status == "False"
    assert by["BackupVerified"].status == "True"  # the last good file is still verified
    blocked = lb.stale(None, T0, T0, timedelta(hours=1))
    assert blocked.status == "False"
    c = lb.summarize(
        [],
        None,
        False,
        T0,
        T0,
        timedelta(hours=26),
        blocked=lb.cond.Condition("LastBackupSucceeded", "False", "SecretMissing", "x"),
    )[0]
    assert {x.type: x for x in c}["Ready"].reason == "SecretMissing"


def test_history_is_bounded_and_keyed_by_job() -> None:
    h: list[dict[str, Any]] = []
    for i in range(15):
        h = lb.merge_history(h, ok_entry(f"j{i}", i), 10)
    h = lb.merge_history(h, ok_entry("j14", 0, verified=False), 10)
    assert len(h) == 10 and h[0]["name"] == "j14" and h[0]["verified"] is False


def test_maintenance_defers_the_slot_until_the_window_releases_it() -> None:
    held = decide(defer="weekly")
    assert held.start is None and held.waiting and "weekly" in held.waiting
    assert held.cursor == T0 - timedelta(minutes=5)  # unchanged: the slot stays pending
    # The window ended 40 minutes later: the held slot runs as the one catch-up.
    after = decide(now=T0 + timedelta(minutes=40))
    assert after.start is not None and after.start.trigger == "catch-up"
    # ... unless it is past the starting deadline by then.
    late = decide(now=T0 + timedelta(minutes=40), deadline=timedelta(minutes=10))
    assert late.start is None or late.start.slot != T0


def test_on_demand_still_runs_during_maintenance() -> None:
    d = decide(defer="weekly", request="by-hand")
    assert d.start is not None and d.start.trigger == "on-demand"
    assert d.cursor == T0 - timedelta(minutes=5)  # the slot is still held for after the window


def test_forbid_wait_reports_missed_slots_once_not_per_tick() -> None:
    """Issue 17 #8: while Forbid waits, every 10 s tick reported the same missed slots."""
    cursor = T0 - timedelta(minutes=1)
    running = ["nightly-202605011159"]
    reported = []
    for tick in range(0, 5 * 60, 10):  # five minutes of ticks while a backup runs
        d = decide("* * * * *", cursor=cursor, now=T0 + timedelta(seconds=tick), active=running)
        assert d.start is None and d.cursor == cursor  # the slot stays pending
        reported.append(d.missed)
    assert reported == [None] * len(reported)
    # The Job finishes: one decision starts the catch-up and reports the skipped slots.
    done = decide("* * * * *", cursor=cursor, now=T0 + timedelta(minutes=5, seconds=5))
    assert done.start is not None and done.start.trigger == "catch-up"
    assert done.missed is not None and done.missed.skipped == 5


def test_a_full_volume_asks_for_one_prune_per_failed_backup() -> None:
    """Issue 17 #11: without verify.schedule, retention never ran again on a full volume."""
    full = {"name": "db-202605010200", "result": "Failed", "reason": "StorageFull"}
    ok = {"name": "db-202605010100", "result": "Succeeded", "verified": True}
    assert lb.storage_full_request([full, ok], None) == "storage-full:db-202605010200"
    assert lb.storage_full_request([full, ok], "storage-full:db-202605010200") is None
    later = {"name": "db-202605010300", "result": "Failed", "reason": "StorageFull"}
    assert lb.storage_full_request([later, full], "storage-full:db-202605010200") == (
        "storage-full:db-202605010300"
    )
    assert lb.storage_full_request([ok, full], None) is None  # it recovered
    other = {"name": "db-202605010400", "result": "Failed", "reason": "AuthFailed"}
    assert lb.storage_full_request([other, full], None) is None
    assert lb.storage_full_request([], None) is None
