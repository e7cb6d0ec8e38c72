"""Incident: the object that records one incident of a HealthPolicy (crds/incident.yaml).

The operator creates it when a policy opens an incident and keeps its status; people
acknowledge or resolve it with annotations (``kubectl annotate`` or ``stronghold incident``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from stronghold_operator.models.status import Condition, StatusModel, Timestamp

PLURAL = "incidents"
KIND = "Incident"
# Who acknowledged / resolved it, set by a person; the operator honours them.
ACK_ANNOTATION = "ops.stronghold.io/ack"
RESOLVE_ANNOTATION = "ops.stronghold.io/resolve"
# On every Incident: the policy it belongs to (a server-side selector for retention).
POLICY_LABEL = "ops.stronghold.io/healthpolicy"
# What resolvedBy says when the checks recovered on their own.
BY_OPERATOR = "operator"

IncidentState = Literal["Open", "Acknowledged", "Resolved"]
SeverityName = Literal["P1", "P2", "P3", "P4"]

# Bounds (the CRD's maxItems): the status never grows with an incident's length.
MAX_TIMELINE = 50
MAX_EVIDENCE_ITEMS = 10
MAX_EVIDENCE_CHECKS = 20


class TimelineEntry(StatusModel):
    time: Timestamp
    type: str
    message: str = ""


class Rollout(StatusModel):
    kind: str
    name: str
    revision: str = ""
    object: str = ""
    at: Timestamp | None = None


class Restart(StatusModel):
    pod: str
    container: str
    restarts: int = 0
    last_reason: str = Field(default="", alias="lastReason")
    exit_code: int | None = Field(default=None, alias="exitCode")
    finished_at: Timestamp | None = Field(default=None, alias="finishedAt")


class WarningEvent(StatusModel):
    object: str
    reason: str = ""
    message: str = ""
    count: int = 1
    last_seen: Timestamp | None = Field(default=None, alias="lastSeen")


class CheckEvidence(StatusModel):
    name: str
    type: str = ""
    state: str = ""
    reason: str = ""
    message: str = ""
    measurements: dict[str, Any] = Field(default_factory=dict)


class Evidence(StatusModel):
    gathered_at: Timestamp | None = Field(default=None, alias="gatheredAt")
    errors: list[str] = Field(default_factory=list)
    rollouts: list[Rollout] = Field(default_factory=list)
    restarts: list[Restart] = Field(default_factory=list)
    warning_events: list[WarningEvent] = Field(default_factory=list, alias="warningEvents")
    checks: list[CheckEvidence] = Field(default_factory=list)


class IncidentStatus(StatusModel):
    """``status`` of an Incident (the CRD's status schema)."""

    observed_generation: int | None = Field(default=None, alias="observedGeneration")
    conditions: list[Condition] = Field(default_factory=list)
    state: IncidentState | None = None
    severity: SeverityName | None = None
    max_severity: SeverityName | None = Field(default=None, alias="maxSeverity")
    root_cause: str | None = Field(default=None, alias="rootCause")
    summary: str = ""
    affected_checks: list[str] = Field(default_factory=list, alias="affectedChecks")
    expected: bool | None = None
    started_at: Timestamp | None = Field(default=None, alias="startedAt")
    acknowledged_at: Timestamp | None = Field(default=None, alias="acknowledgedAt")
    acknowledged_by: str | None = Field(default=None, alias="acknowledgedBy")
    resolved_at: Timestamp | None = Field(default=None, alias="resolvedAt")
    resolved_by: str | None = Field(default=None, alias="resolvedBy")
    duration_seconds: int | None = Field(default=None, alias="durationSeconds")
    duration: str | None = None
    escalation_level: int | None = Field(default=None, alias="escalationLevel")
    timeline: list[TimelineEntry] = Field(default_factory=list)
    evidence: Evidence | None = None
