"""``stronghold status``'s pure part: rows, problems first, staleness, exit code, JSON schema."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import jsonschema
import pytest

from stronghold_operator.logic import status as logic
from tests.support import status_objects as so

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
NS = "shop"


def obj(built: tuple[dict[str, Any], dict[str, Any]], ns: str = NS, **kw: Any) -> dict[str, Any]:
    return so.api_object(built, ns, NOW, **kw)


def schema() -> dict[str, Any]:
    text = resources.files("stronghold_operator.logic").joinpath("status.schema.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def validate(doc: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(
        schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    validator.validate(doc)


def every_state() -> dict[str, list[dict[str, Any]]]:
    return {
        "HealthPolicy": [
            obj(so.health_healthy("web-ok", NOW)),
            obj(so.health_incident("web-down", NOW)),
        ],
        "BackupSchedule": [
            obj(so.backup_fresh("nightly-ok", NOW)),
            obj(so.backup_stale("nightly-old", NOW)),
        ],
        "ScalingPolicy": [
            obj(so.scaling_steady("web-steady", NOW)),
            obj(so.scaling_at_max("web-max", NOW)),
        ],
        "MaintenanceWindow": [
            obj(so.window_scheduled("weekly", NOW)),
            obj(so.window_active("now", NOW)),
        ],
    }


def test_the_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(schema())


def test_healthy_objects_are_ok_and_exit_zero() -> None:
    objects = {
        "HealthPolicy": [obj(so.health_healthy("web", NOW))],
        "BackupSchedule": [obj(so.backup_fresh("nightly", NOW))],
        "ScalingPolicy": [obj(so.scaling_steady("web", NOW))],
        "MaintenanceWindow": [obj(so.window_scheduled("weekly", NOW))],
    }
    report = logic.report(objects, NOW, namespaces=[NS], scope={"namespace": NS})
    assert report.exit_code == 0
    assert [(r.kind, r.level, r.state) for r in report.namespaces[0].rows] == [
        ("HealthPolicy", "OK", "Healthy"),
        ("BackupSchedule", "OK", "OK"),
        ("ScalingPolicy", "OK", "Steady"),
        ("MaintenanceWindow", "OK", "Scheduled"),
    ]
    assert all(r.problems == () for r in report.namespaces[0].rows)
    validate(report.to_json())


def test_every_state_problems_first_and_exit_one() -> None:
    report = logic.report(every_state(), NOW, namespaces=[NS], scope={"namespace": NS})
    assert report.exit_code == 1
    rows = [(r.name, r.level, r.state) for r in report.namespaces[0].rows]
    assert rows == [
        ("web-down", "Critical", "Critical"),
        ("nightly-old", "Critical", "Stale"),
        ("web-max", "Warning", "AtMax"),
        ("now", "Active", "Active"),
        ("web-ok", "OK", "Healthy"),
        ("nightly-ok", "OK", "OK"),
        ("web-steady", "OK", "Steady"),
        ("weekly", "OK", "Scheduled"),
    ]
    assert report.problems == 3
    doc = report.to_json()
    validate(doc)
    hp = doc["namespaces"][0]["healthPolicies"]
    assert [h["name"] for h in hp] == ["web-down", "web-ok"]
    incident = hp[0]["incident"]
    assert (incident["rootCause"], incident["severity"], incident["ageSeconds"]) == (
        "web",
        "P1",
        420,
    )
    assert hp[0]["problems"] == ["incident P1 open, root cause web"]
    assert doc["namespaces"][0]["backupSchedules"][0]["stale"] is True
    assert doc["namespaces"][0]["scalingPolicies"][0]["lastDecision"]["reason"] == "CappedByMax"
    assert doc["namespaces"][0]["maintenanceWindows"][0]["active"] is True
    assert doc["summary"] == {"objects": 8, "problems": 3, "exitCode": 1}


def test_an_active_window_alone_is_not_a_problem() -> None:
    report = logic.report({"MaintenanceWindow": [obj(so.window_active("now", NOW))]}, NOW)
    (row,) = report.namespaces[0].rows
    assert (row.level, row.state, row.problem) == ("Active", "Active", False)
    assert row.cells[0].startswith("active until ")
    assert report.exit_code == 0


def test_namespaces_with_problems_come_first_then_by_name() -> None:
    objects = {
        "HealthPolicy": [
            obj(so.health_healthy("a", NOW), ns="aaa"),
            obj(so.health_incident("b", NOW), ns="zzz"),
            obj(so.health_healthy("c", NOW), ns="mmm"),
        ]
    }
    report = logic.report(objects, NOW, scope={"allNamespaces": True})
    assert [n.name for n in report.namespaces] == ["zzz", "aaa", "mmm"]
    validate(report.to_json())


def test_an_asked_for_namespace_with_nothing_is_shown_and_fine() -> None:
    report = logic.report({}, NOW, namespaces=["empty"], scope={"namespace": "empty"})
    assert [(n.name, n.rows) for n in report.namespaces] == [("empty", ())]
    assert report.exit_code == 0
    validate(report.to_json())


def test_backup_staleness_is_judged_from_the_times_not_only_the_condition() -> None:
    # The operator last wrote "fresh" three days ago and has not run since.
    o = obj(so.backup_stale("nightly", NOW))
    o["status"]["conditions"][2]["status"] = "False"
    row = logic.backup_row(o, NOW)
    assert (row.level, row.state, row.fields["stale"]) == ("Critical", "Stale", True)
    assert "3d0h old (staleAfter 1d2h)" in row.problems[0]
    # The same archive within a longer staleAfter is fine.
    o["spec"]["staleAfter"] = "100h"
    assert logic.backup_row(o, NOW).level == "OK"


def test_a_next_run_long_past_says_the_operator_may_not_run() -> None:
    o = obj(so.backup_fresh("nightly", NOW))
    o["status"]["nextScheduleTime"] = so.ts(NOW - timedelta(hours=1))
    row = logic.backup_row(o, NOW)
    assert row.level == "Warning"
    assert row.problems == ("next run was due 1h0m ago (is the operator running?)",)


def test_a_failed_backup_and_failed_restore_test_are_problems() -> None:
    o = obj(so.backup_fresh("nightly", NOW))
    o["status"]["backups"][0].update(result="Failed", reason="AuthFailed")
    o["status"]["lastRestoreTest"].update(result="Failed", reason="RowCountMismatch")
    row = logic.backup_row(o, NOW)
    assert (row.level, row.state) == ("Critical", "Failed")
    assert any("failed: AuthFailed" in p for p in row.problems)
    assert any("RowCountMismatch" in p for p in row.problems)


def test_a_health_status_not_refreshed_for_long_is_stale() -> None:
    o = obj(so.health_healthy("web", NOW))
    o["status"]["lastProbeTime"] = so.ts(NOW - timedelta(minutes=30))
    assert logic.health_row(o, NOW).level == "OK"  # within the 30 min refresh
    o["status"]["lastProbeTime"] = so.ts(NOW - timedelta(hours=2))
    row = logic.health_row(o, NOW)
    assert row.level == "Warning"
    assert row.problems == ("last probe 2h0m ago (is the operator running?)",)


def test_an_expected_incident_during_maintenance_is_a_warning() -> None:
    o = obj(so.health_incident("web", NOW))
    o["status"]["incident"]["expected"] = True
    row = logic.health_row(o, NOW)
    assert row.level == "Warning"
    assert row.fields["incident"]["expected"] is True
    assert "(expected: maintenance)" in row.cells[1]


def test_no_status_yet_is_unknown() -> None:
    bare, _ = so.health_healthy("web", NOW)
    o = obj((bare, {}), created=timedelta(minutes=1))  # older, a backup would be stale too
    for build in (logic.health_row, logic.backup_row, logic.scaling_row, logic.window_row):
        row = build(o, NOW)
        assert row.level == "Unknown"
        assert row.problems == ("no status yet (is the operator running?)",)


def test_ready_false_is_critical_with_its_reason() -> None:
    o = obj(so.scaling_steady("web", NOW))
    o["status"]["conditions"][0] = {
        "type": "Ready",
        "status": "False",
        "reason": "TargetNotFound",
        "message": "Deployment web not found",
    }
    o["status"]["conditions"][3] = {
        "type": "MetricsAvailable",
        "status": "False",
        "reason": "TargetNotFound",
        "message": "Deployment web not found",
    }
    row = logic.scaling_row(o, NOW)
    assert (row.level, row.state) == ("Critical", "TargetNotFound")
    # Said once: the metrics are unavailable for the same reason.
    assert row.problems == ("Ready=False TargetNotFound: Deployment web not found",)


def test_an_unobserved_spec_change_is_unknown() -> None:
    o = obj(so.window_scheduled("weekly", NOW))
    o["metadata"]["generation"] = 2
    row = logic.window_row(o, NOW)
    assert row.level == "Unknown"
    assert "generation 2 not observed yet" in row.problems[0]


@pytest.mark.parametrize(
    ("reason", "state", "level"),
    [
        ("Paused", "Paused", "OK"),
        ("DryRun", "DryRun", "OK"),
        ("MaintenanceWindow", "Frozen", "Active"),
        ("ConflictingAutoscaler", "Conflict", "Critical"),
    ],
)
def test_scaling_inactive_reasons(reason: str, state: str, level: str) -> None:
    o = obj(so.scaling_steady("web", NOW))
    o["status"]["conditions"][1] = {"type": "ScalingActive", "status": "False", "reason": reason}
    row = logic.scaling_row(o, NOW)
    assert (row.state, row.level) == (state, level)


def test_scaling_at_min_is_not_a_problem() -> None:
    o = obj(so.scaling_steady("web", NOW))
    o["status"]["conditions"][2] = {"type": "ScalingLimited", "status": "True", "reason": "AtMin"}
    assert logic.scaling_row(o, NOW).level == "OK"


def test_a_failed_last_window_is_a_warning_with_its_message() -> None:
    o = obj(so.window_scheduled("weekly", NOW))
    o["status"]["lastResult"] = "Failed"
    o["status"]["history"] = [{"id": "x", "result": "Failed", "message": "post-checks failed"}]
    row = logic.window_row(o, NOW)
    assert (row.level, row.problems) == ("Warning", ("last window Failed: post-checks failed",))


def test_relative_times() -> None:
    assert logic.ago(None, NOW) == "-"
    assert logic.ago(NOW - timedelta(seconds=42), NOW) == "42s ago"
    assert logic.ago(NOW + timedelta(hours=2, minutes=5), NOW) == "in 2h5m"
    assert logic.ago(NOW - timedelta(days=3, hours=1), NOW) == "3d1h ago"


def test_the_probe_refresh_matches_the_controller() -> None:
    from stronghold_operator.controllers import health

    assert timedelta(seconds=health.PROBE_TIME_REFRESH_S) == logic.PROBE_TIME_REFRESH


def test_bad_checks_without_an_incident_are_named() -> None:
    o = obj(so.health_incident("web", NOW))
    del o["status"]["incident"]
    row = logic.health_row(o, NOW)
    assert (row.level, row.problems) == ("Critical", ("Critical: web: connection refused",))
    o["status"]["checks"][0]["state"] = "Warning"
    row = logic.health_row(o, NOW)
    assert (row.level, row.state) == ("Warning", "Warning")


def test_a_new_schedule_waiting_for_its_first_slot_is_fine_until_stale() -> None:
    o = obj(so.backup_fresh("nightly", NOW), created=timedelta(hours=2))
    for key in ("lastSuccessfulTime", "lastVerifiedTime", "backups", "lastRestoreTest"):
        del o["status"][key]
    row = logic.backup_row(o, NOW)
    assert (row.level, row.state, row.problems) == ("OK", "NoBackupYet", ())
    o["metadata"]["creationTimestamp"] = so.ts(NOW - timedelta(hours=27))
    row = logic.backup_row(o, NOW)
    assert (row.level, row.state) == ("Critical", "Stale")
    assert "no verified backup since the schedule was created 1d3h ago" in row.problems[0]


def test_an_object_being_deleted_is_a_warning_not_an_unobserved_spec() -> None:
    o = obj(so.window_scheduled("weekly", NOW))
    o["metadata"].update(generation=2, deletionTimestamp=so.ts(NOW - timedelta(minutes=20)))
    row = logic.window_row(o, NOW)
    assert (row.level, row.problems) == ("Warning", ("being deleted since 2026-12-06T11:40:00Z",))
