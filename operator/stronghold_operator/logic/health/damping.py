"""Flap damping: one incident for a check that oscillates, instead of one per swing.

Two rules (``spec.flapDamping``), both pure:

- an open incident is resolved only after ``resolveAfter`` consecutive rounds with nothing
  to report; meanwhile it stays open, ``recovering`` (``healthyRounds``, ``recoveringSince``),
  and a bad round in between simply carries on the same incident, without news;
- a new incident with the same root cause within ``reopenWithin`` of the last one's
  resolution re-opens that one (same id and start, worst severity kept, ``reopened``
  counted) instead of starting another.

Why at the incident, and not ``successThreshold``: a check's thresholds keep its *state*
bad until it has recovered for sure (the Healthy condition then lies for a while); damping
keeps each check's state truthful and only holds the incident, which spans checks (the
root cause may move between them while the whole stack flaps).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from stronghold_operator import conditions as cond
from stronghold_operator.logic.health.classification import Classification, severity_rank
from stronghold_operator.models.health import SEVERITIES, FlapDamping, HealthPolicySpec

_RECOVERY = ("healthyRounds", "recoveringSince")


def recovering(
    previous: Mapping[str, Any], damping: FlapDamping, now: datetime
) -> dict[str, Any] | None:
    """The open incident after a round that found nothing: still open while fewer than
    ``resolveAfter`` such rounds came in a row; None when it is to be resolved now."""
    rounds = _int(previous.get("healthyRounds")) + 1
    if rounds >= damping.resolve_after:
        return None
    incident = dict(previous)
    incident["healthyRounds"] = rounds
    incident.setdefault("recoveringSince", cond.rfc3339(now))
    return incident


def relapsed(previous: Mapping[str, Any]) -> dict[str, Any]:
    """The open incident after a bad round: any recovery in progress is over."""
    return {k: v for k, v in previous.items() if k not in _RECOVERY}


def resolved_at(previous: Mapping[str, Any], now: datetime) -> datetime:
    """When the incident ended: the first of its healthy rounds, not the last."""
    since = cond.parse_rfc3339(previous.get("recoveringSince"))
    return since if since is not None and since <= now else now


def reopenable(
    recent: Sequence[Mapping[str, Any]],
    found: Classification,
    damping: FlapDamping,
    now: datetime,
) -> Mapping[str, Any] | None:
    """The last resolved incident, if this new one is it coming back: the same root cause
    within ``reopenWithin`` of its end."""
    if not recent or damping.reopen_within.total_seconds() <= 0:
        return None
    last = recent[0]
    ended = cond.parse_rfc3339(last.get("endedAt"))
    if ended is None or last.get("rootCause") != found.root_cause or not last.get("id"):
        return None
    if not ended <= now <= ended + damping.reopen_within:
        return None
    return last


def reopened(
    closed: Mapping[str, Any], found: Classification, maintenance: str | None
) -> dict[str, Any]:
    """The resolved incident open again with this round's findings."""
    worst = closed.get("severity")
    if worst not in SEVERITIES or severity_rank(found.severity) < severity_rank(worst):
        worst = found.severity
    incident: dict[str, Any] = {
        "id": closed["id"],
        "severity": found.severity,
        "maxSeverity": worst,
        "rootCause": found.root_cause,
        "summary": found.summary,
        "startedAt": closed.get("startedAt"),
        "escalationLevel": max(1, _int(closed.get("escalationLevel"))),
        "expected": maintenance is not None,
        "reopened": _int(closed.get("reopened")) + 1,
    }
    if maintenance:
        incident["maintenanceWindow"] = maintenance
    if closed.get("remediation"):
        incident["remediation"] = closed["remediation"]
    for kept in ("incidentName", "grouped"):  # it goes on where it was recorded
        if closed.get(kept):
            incident[kept] = closed[kept]
    return incident


def recovery_note(incident: Mapping[str, Any], policy: HealthPolicySpec) -> str:
    """`` (recovering: 1/2 healthy rounds)`` for the IncidentOpen condition, or nothing."""
    rounds = _int(incident.get("healthyRounds"))
    if not rounds:
        return ""
    return f" (recovering: {rounds}/{policy.flap_damping.resolve_after} healthy rounds)"


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
