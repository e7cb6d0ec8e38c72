"""The post-mortem renderer (logic/postmortem.py): a golden file, and the guide's sections."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from stronghold_operator.logic import postmortem

GOLDEN = Path(__file__).parent / "golden" / "incident-postmortem.md"

# The guide's template's sections, in its order (docs/incidents.md adds Evidence and
# Actions Taken, which the operator fills, and Impact, which a person does).
SECTIONS = ["## Summary", "## Timeline", "## Root Cause", "## Action Items", "## Lessons Learned"]


def incident() -> dict[str, Any]:
    return {
        "apiVersion": "ops.stronghold.io/v1alpha1",
        "kind": "Incident",
        "metadata": {"name": "stack-20260101-120030", "namespace": "shop"},
        "spec": {"healthPolicy": "stack", "id": "stack-20260101-120030"},
        "status": {
            "state": "Resolved",
            "severity": "P2",
            "maxSeverity": "P1",
            "rootCause": "db",
            "summary": "db: connection refused; also affected: web",
            "affectedChecks": ["db", "web"],
            "startedAt": "2026-01-01T12:00:30Z",
            "acknowledgedAt": "2026-01-01T12:04:00Z",
            "acknowledgedBy": "alice",
            "resolvedAt": "2026-01-01T13:15:30Z",
            "resolvedBy": "operator",
            "durationSeconds": 4500,
            "duration": "1h15m",
            "escalationLevel": 2,
            "timeline": [
                {
                    "time": "2026-01-01T12:00:30Z",
                    "type": "Detected",
                    "message": "INCIDENT START - P1",
                },
                {
                    "time": "2026-01-01T12:04:00Z",
                    "type": "Acknowledged",
                    "message": "acknowledged by alice",
                },
                {
                    "time": "2026-01-01T12:30:30Z",
                    "type": "Escalated",
                    "message": "escalated to level 2",
                },
                {"time": "2026-01-01T12:40:00Z", "type": "SeverityChanged", "message": "P1 -> P2"},
                {
                    "time": "2026-01-01T13:15:30Z",
                    "type": "Resolved",
                    "message": "INCIDENT RESOLVED - Duration: 1h 15m",
                },
            ],
            "evidence": {
                "gatheredAt": "2026-01-01T12:00:31Z",
                "errors": ["events: 403 Forbidden"],
                "rollouts": [
                    {
                        "kind": "Deployment",
                        "name": "web",
                        "revision": "7",
                        "object": "ReplicaSet/web-5d9f",
                        "at": "2026-01-01T11:52:00Z",
                    }
                ],
                "restarts": [
                    {
                        "pod": "db-0",
                        "container": "postgres",
                        "restarts": 2,
                        "lastReason": "OOMKilled",
                        "exitCode": 137,
                    }
                ],
                "warningEvents": [],
                "checks": [
                    {
                        "name": "db",
                        "type": "postgres",
                        "state": "Critical",
                        "reason": "Unreachable",
                        "message": "connection refused",
                        "measurements": {"connectionsPercent": 12.5},
                    }
                ],
                "usage": [
                    {
                        "kind": "StatefulSet",
                        "name": "db",
                        "pods": 1,
                        "measuredPods": 1,
                        "policyTarget": True,
                        "cpuMillicores": 850,
                        "memoryBytes": 500 * 2**20,
                        "cpuPercentOfRequests": 85,
                        "memoryPercentOfRequests": 98,
                        "memoryPercentOfLimits": 49,
                    },
                    {"kind": "Deployment", "name": "web", "pods": 2, "measuredPods": 0},
                ],
            },
        },
    }


def test_golden() -> None:
    got = postmortem.render(incident())
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(got)
    assert got == GOLDEN.read_text(), f"regenerate with UPDATE_GOLDEN=1 if intended ({GOLDEN})"


def test_the_guide_sections_in_order_and_blanks_for_people() -> None:
    text = postmortem.render(incident())
    at = [text.index(s) for s in SECTIONS]
    assert at == sorted(at)
    assert text.startswith("# Incident Post-Mortem: 2026-01-01 - P1 db:")
    assert "- Duration: 1 hours 15 minutes (1h15m)" in text
    assert "- 11:52" not in text and "Deployment/web revision 7" in text
    assert "## Impact" in text and "to be completed" in text
    assert "- 12:04 - acknowledged by alice" in text  # an action taken
    assert (
        "- StatefulSet/db (policy's): 1 pod(s), 1 measured: CPU 850m (85% of requests),"
        " memory 500 MiB (98% of requests, 49% of limits)" in text
    )
    assert "- Deployment/web: 2 pod(s), 0 measured\n" in text


def test_an_open_incident_without_evidence_still_renders() -> None:
    text = postmortem.render({"metadata": {"name": "x", "namespace": "y"}, "status": {}})
    assert "- Duration: still open" in text and "- (no timeline recorded)" in text
    for s in SECTIONS:
        assert s in text


def test_remediation_steps_are_actions_taken() -> None:
    inc = incident()
    step = {
        "time": "2026-01-01T12:09:00Z",
        "type": "Remediation",
        "message": "remediation restart-web (1/2): rollout restart of Deployment web for"
        " incident x: restarted (kubectl.kubernetes.io/restartedAt set)",
    }
    inc["status"]["timeline"] = [*inc["status"]["timeline"], step]
    text = postmortem.render(inc)
    actions = text.split("## Actions Taken", 1)[1].split("## Impact", 1)[0]
    assert "rollout restart of Deployment web" in actions
