"""When HealthPolicy status is written: significant changes now, numbers with them (never
alone: no heartbeat)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from stronghold_operator import conditions as cond
from stronghold_operator.controllers.common import compute_status
from stronghold_operator.runtime.status import signature_conditions as _merged_signature_conditions
from stronghold_operator.services.health import signature as _signature

BASE: dict[str, Any] = {
    "lastProbeTime": "2026-11-27T01:00:00Z",
    "worstLatencyMs": 12.0,
    "severity": "None",
    "conditions": [
        {"type": "Ready", "status": "True", "reason": "Reconciled", "message": "4 check(s)"},
        {"type": "Degraded", "status": "False", "reason": "NoFindings", "message": "ok"},
    ],
    "checks": [
        {
            "name": "web",
            "type": "http",
            "state": "Healthy",
            "observedState": "Healthy",
            "reason": "Healthy",
            "message": "200 in 12ms",
            "latencyMs": 12.0,
            "consecutiveSuccesses": 3,
            "findings": [],
            "measurements": {"urls": [{"statusCode": 200, "latencyMs": 12.0}]},
        }
    ],
}


def _significant(current: dict[str, Any], written: dict[str, Any]) -> bool:
    """What the write path asks: does the status differ in what a reader acts on?"""
    return _signature(current) != _signature(written)


def changed(path: list[Any], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(BASE)
    node: Any = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


@pytest.mark.parametrize(
    "path, value",
    [
        (["lastProbeTime"], "2026-11-27T01:00:10Z"),
        (["worstLatencyMs"], 180.0),
        (["checks", 0, "latencyMs"], 180.0),
        (["checks", 0, "message"], "200 in 180ms"),
        (["checks", 0, "observedState"], "Warning"),  # one bad probe, below the threshold
        (["checks", 0, "consecutiveSuccesses"], 4),
        (["checks", 0, "measurements"], {"urls": [{"statusCode": 200, "latencyMs": 180.0}]}),
        (["conditions", 1, "message"], "ok, 4 checks"),
    ],
)
def test_numbers_and_words_wait_for_a_significant_change(path: list[Any], value: Any) -> None:
    assert not _significant(changed(path, value), BASE)


@pytest.mark.parametrize(
    "path, value",
    [
        (["checks", 0, "state"], "Warning"),
        (["checks", 0, "reason"], "LatencyWarning"),
        (["checks", 0, "findings"], [{"code": "LatencyWarning", "level": "Warning"}]),
        (["conditions", 1, "status"], "True"),
        (["conditions", 0, "reason"], "InvalidSpec"),
        (["severity"], "P4"),
        (["incident"], {"id": "x", "severity": "P4", "summary": "web slow"}),
    ],
)
def test_states_reasons_and_incidents_are_written_at_once(path: list[Any], value: Any) -> None:
    assert _significant(changed(path, value), BASE)


def test_an_incident_summary_alone_waits() -> None:
    before = changed(["incident"], {"id": "x", "severity": "P4", "summary": "web 250ms"})
    after = changed(["incident"], {"id": "x", "severity": "P4", "summary": "web 260ms"})
    assert not _significant(after, before)
    worse = changed(["incident"], {"id": "x", "severity": "P3", "summary": "web 600ms"})
    assert _significant(worse, before)


def _slow_signature(
    written: dict[str, Any], desired: dict[str, Any], updates: list[cond.Condition]
) -> tuple[Any, ...]:
    """The signature of what the full diff would make of the status (the slow path)."""
    body = {"metadata": {"generation": 3}}
    delta, _ = compute_status(body, written, desired, updates, cond.utcnow())
    return _signature(cond.merge_patch(written, delta))


def _fast_signature(
    written: dict[str, Any], desired: dict[str, Any], updates: list[cond.Condition]
) -> tuple[Any, ...]:
    candidate = {**written, **desired, "observedGeneration": 3}
    candidate["conditions"] = _merged_signature_conditions(written.get("conditions"), updates)
    return _signature(candidate)


UPDATES = [
    cond.Condition("Ready", "True", "Reconciled", "4 check(s)"),
    cond.Condition("Degraded", "False", "NoFindings", "ok"),
]


@pytest.mark.parametrize(
    "desired, updates",
    [
        ({k: v for k, v in BASE.items() if k != "conditions"}, UPDATES),
        ({"checks": changed(["checks", 0, "latencyMs"], 190.0)["checks"]}, UPDATES),
        ({"checks": changed(["checks", 0, "state"], "Warning")["checks"]}, UPDATES),
        ({"severity": "P3"}, UPDATES),
        ({}, [cond.Condition("Degraded", "True", "LatencyWarning", "slow")]),
        ({}, [*UPDATES, cond.Condition("IncidentOpen", "False", "NoIncident", "")]),
        ({}, UPDATES[:1]),
    ],
)
def test_the_shortcut_signature_equals_the_full_diffs(
    desired: dict[str, Any], updates: list[cond.Condition]
) -> None:
    """A round skips the diff when its signature equals the written one: that signature must
    be exactly the one the full diff and merge would produce."""
    written = {**copy.deepcopy(BASE), "observedGeneration": 3}
    assert _fast_signature(written, desired, updates) == _slow_signature(written, desired, updates)
