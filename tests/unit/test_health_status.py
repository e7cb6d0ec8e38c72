"""The typed HealthPolicy status (models/health.HealthPolicyStatus) against the CRD's status
schema, and what a round writes held to it (rounds build dicts; see the model's comment)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from stronghold_operator import conditions as cond
from stronghold_operator.models.health import (
    CheckStatus,
    FindingStatus,
    HealthPolicyStatus,
    IncidentStatus,
)
from tests.unit.test_health_logic import T0, all_ok, down, run, stack, web_ok

CRD = Path(__file__).resolve().parents[2] / "crds" / "healthpolicy.yaml"


def schema() -> dict[str, Any]:
    doc = yaml.safe_load(CRD.read_text())
    props: dict[str, Any] = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return dict(props["properties"]["status"]["properties"])


def aliases(model: type[BaseModel]) -> set[str]:
    return {f.alias or name for name, f in model.model_fields.items()}


def test_the_model_is_the_crd_status_schema() -> None:
    status = schema()
    assert aliases(HealthPolicyStatus) == set(status)
    assert aliases(CheckStatus) == set(status["checks"]["items"]["properties"])
    findings = status["checks"]["items"]["properties"]["findings"]["items"]["properties"]
    assert aliases(FindingStatus) == set(findings)
    assert aliases(IncidentStatus) == set(status["incident"]["properties"])
    assert aliases(IncidentStatus) == set(status["recentIncidents"]["items"]["properties"])


def known(fields: dict[str, Any]) -> None:
    """Every key a round wrote is a field of the model (nothing the schema would prune)."""
    assert set(fields) <= aliases(HealthPolicyStatus)
    for check in fields.get("checks") or ():
        assert set(check) <= aliases(CheckStatus)
    for incident in [fields.get("incident"), *(fields.get("recentIncidents") or ())]:
        if incident:
            assert set(incident) <= aliases(IncidentStatus)


def test_a_round_through_an_incident_writes_the_typed_status() -> None:
    policy = stack(alerting={"webhook": {"url": "http://hook:9000/"}})
    status, ev = run(policy, {}, all_ok(), T0)
    bad = all_ok() | {"db": down(), "web": web_ok(database="disconnected")}
    for minute in range(1, 4):
        status, ev = run(policy, status, bad, T0 + timedelta(minutes=minute))
    opened = HealthPolicyStatus.model_validate(status)
    known(status)
    assert opened.incident is not None and opened.incident.root_cause == "db"
    assert opened.severity == opened.incident.severity
    status, ev = run(policy, status, all_ok(), T0 + timedelta(minutes=10))
    status, ev = run(policy, status, all_ok(), T0 + timedelta(minutes=11))
    status["conditions"] = [
        {**c.__dict__, "lastTransitionTime": cond.rfc3339(T0)} for c in ev.conditions
    ]
    closed = HealthPolicyStatus.model_validate(status)
    known(status)
    assert closed.incident is None and closed.recent_incidents[0].ended_at is not None
    assert {c.state for c in closed.checks} == {"Healthy"}
    assert [c.type for c in closed.conditions] == ["Ready", "Healthy", "Degraded", "IncidentOpen"]
