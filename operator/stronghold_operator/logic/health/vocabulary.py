"""The words of a HealthPolicy's status: condition types, reasons, severity texts."""

from __future__ import annotations

from stronghold_operator import conditions as cond

# Condition types and reasons of a HealthPolicy.
HEALTHY = "Healthy"
DEGRADED = "Degraded"
INCIDENT_OPEN = "IncidentOpen"
CONDITION_TYPES = (cond.READY, HEALTHY, DEGRADED, INCIDENT_OPEN)
REASON_MAINTENANCE = "MaintenanceInProgress"
REASON_RATE_LIMITED = "RateLimited"
SEVERITY_REASON: dict[str, str] = {
    "P1": "P1Critical",
    "P2": "P2High",
    "P3": "P3Medium",
    "P4": "P4Low",
}
SEVERITY_TEXT: dict[str, str] = {
    "P1": "complete service outage",
    "P2": "major functionality affected",
    "P3": "minor functionality affected",
    "P4": "warning-level findings",
}
NO_SEVERITY = "None"
