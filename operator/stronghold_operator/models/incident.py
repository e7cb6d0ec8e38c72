"""Incident: the object that records one incident of a HealthPolicy (crds/incident.yaml).

The operator creates it when a policy opens an incident and keeps its status; people
acknowledge or resolve it with annotations (``kubectl annotate`` or ``stronghold incident``).
"""

from __future__ import annotations

from dataclasses import dataclass
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
# Workloads in the evidence's resource usage (the policy's own first, then by CPU).
MAX_EVIDENCE_USAGE = 5


@dataclass(frozen=True)
class PodResources:
    """A pod's containers' requests and limits summed (cores, bytes); None where some
    container sets none (a percentage of it would mean nothing)."""

    cpu_request: float | None = None
    memory_request: float | None = None
    cpu_limit: float | None = None
    memory_limit: float | None = None


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


class WorkloadUsage(StatusModel):
    """One workload's pods and what they use (metrics.k8s.io) at open time."""

    kind: str
    name: str
    pods: int = 0
    measured_pods: int = Field(default=0, alias="measuredPods")
    policy_target: bool = Field(default=False, alias="policyTarget")
    cpu_millicores: int | None = Field(default=None, alias="cpuMillicores")
    memory_bytes: int | None = Field(default=None, alias="memoryBytes")
    cpu_percent_of_requests: int | None = Field(default=None, alias="cpuPercentOfRequests")
    memory_percent_of_requests: int | None = Field(default=None, alias="memoryPercentOfRequests")
    cpu_percent_of_limits: int | None = Field(default=None, alias="cpuPercentOfLimits")
    memory_percent_of_limits: int | None = Field(default=None, alias="memoryPercentOfLimits")


class Evidence(StatusModel):
    gathered_at: Timestamp | None = Field(default=None, alias="gatheredAt")
    errors: list[str] = Field(default_factory=list)
    rollouts: list[Rollout] = Field(default_factory=list)
    restarts: list[Restart] = Field(default_factory=list)
    warning_events: list[WarningEvent] = Field(default_factory=list, alias="warningEvents")
    checks: list[CheckEvidence] = Field(default_factory=list)
    usage: list[WorkloadUsage] = Field(default_factory=list)


class Grouped(StatusModel):
    """Other policies' incidents on the same shared target, recorded on this Incident."""

    target: str
    count: int
    policies: list[str] = Field(default_factory=list)


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
    grouped: Grouped | None = None
