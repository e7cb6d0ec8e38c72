"""The demo's settle rule and summary rows, from example objects' status (no cluster)."""

from __future__ import annotations

import shlex
from typing import Any

import pytest

from stronghold_operator import cli as stronghold_cli
from stronghold_testbed import cli as testbed_cli
from stronghold_testbed import demo, demo_state


def _obj(
    kind: str, name: str, status: dict[str, Any], spec: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name}, "spec": spec or {}, "status": status}


def _cond(kind: str, status: str) -> dict[str, Any]:
    return {"conditions": [{"type": kind, "status": status}]}


FRESH = [
    _obj("MaintenanceWindow", "weekly", {}),
    _obj("HealthPolicy", "platform", _cond("Healthy", "Unknown")),
    _obj("BackupSchedule", "nightly", {}, {"verify": {}}),
    _obj(
        "ScalingPolicy",
        "worker",
        {"lastDecision": {"action": "Hold", "reason": "MetricsUnavailable"}},
    ),
]

SETTLED = [
    _obj(
        "MaintenanceWindow",
        "weekly",
        {"nextWindow": {"startLocal": "2026-12-06T02:00:00+01:00"}, **_cond("Active", "False")},
    ),
    _obj("HealthPolicy", "platform", {"worstLatency": "12ms", **_cond("Healthy", "True")}),
    _obj(
        "BackupSchedule",
        "nightly",
        {"lastSuccessfulTime": "t1", "lastVerifiedTime": "t1", "nextScheduleTime": "t2"},
        {"verify": {}},
    ),
    _obj(
        "ScalingPolicy",
        "worker",
        {
            "currentReplicas": 1,
            "desiredReplicas": 1,
            "currentCpuUtilizationPercent": 3,
            "lastDecision": {"action": "Hold", "reason": "WithinBand"},
        },
    ),
]


def test_fresh_objects_name_everything_still_pending() -> None:
    pending = demo_state.pending(FRESH)
    assert pending == (
        "HealthPolicy/platform: Healthy=True; BackupSchedule/nightly: the first backup; "
        "ScalingPolicy/worker: a decision from real metrics; MaintenanceWindow/weekly: "
        "the next window"
    )


def test_settled_objects_and_their_rows_in_kind_order() -> None:
    assert demo_state.pending(SETTLED) is None
    rows = demo_state.rows(SETTLED)
    assert [r.kind for r in rows] == list(demo_state.EXPECTED_KINDS)
    assert rows[0].state == "Healthy" and "12ms" in rows[0].detail
    assert rows[2].state == "1 -> 1 replicas" and "WithinBand" in rows[2].detail


def test_a_backup_not_yet_verified_and_a_missing_kind_are_pending() -> None:
    items = [dict(i) for i in SETTLED if i["kind"] != "MaintenanceWindow"]
    items[1] = _obj("BackupSchedule", "nightly", {"lastSuccessfulTime": "t1"}, {"verify": {}})
    assert demo_state.pending(items) == (
        "a MaintenanceWindow; BackupSchedule/nightly: the first backup's verification"
    )


def test_an_open_incident_shows_its_root_cause() -> None:
    obj = _obj(
        "HealthPolicy",
        "platform",
        {"incident": {"rootCause": "cache"}, **_cond("Healthy", "False")},
    )
    (row,) = demo_state.rows([obj])
    assert row.state == "Unhealthy" and row.detail.startswith("incident: cache")


@pytest.mark.parametrize("command", [c for c, _ in demo.TRY_NEXT])
def test_every_try_next_command_is_a_real_verb(command: str) -> None:
    prog, *args = shlex.split(command)
    parser = (
        stronghold_cli.build_parser(args) if prog == "stronghold" else testbed_cli.build_parser()
    )
    assert prog in ("stronghold", "stronghold-testbed")
    parser.parse_args(args)  # SystemExit on an unknown verb or flag
