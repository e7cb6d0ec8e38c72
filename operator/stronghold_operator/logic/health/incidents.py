"""Incident lifecycle: open, update, escalate, resolve; ids; the recent list; notifications."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from stronghold_operator import conditions as cond
from stronghold_operator.logic.health import damping
from stronghold_operator.logic.health.classification import Classification, severity_rank
from stronghold_operator.logic.health.vocabulary import SEVERITY_TEXT
from stronghold_operator.models.health import SEVERITIES, HealthPolicySpec, Webhook

MAX_RECENT_INCIDENTS = 10


NotificationKind = Literal["Opened", "SeverityChanged", "Escalated", "Resolved"]


@dataclass(frozen=True)
class Notification:
    """Something to tell humans: always an Event; a webhook unless the incident is expected."""

    kind: NotificationKind
    incident: Mapping[str, Any]
    message: str
    expected: bool
    level: int = 1
    webhooks: tuple[Webhook, ...] = ()
    duration_s: float | None = None

    @property
    def reason(self) -> str:
        return f"Incident{self.kind}"


def _duration_text(seconds: float) -> str:
    """The guide's "Duration: X minutes" (seconds below a minute, hours above an hour)."""
    if seconds < 60:
        return f"{int(seconds)} seconds"
    minutes = int(seconds // 60)
    if minutes >= 60:
        return f"{minutes // 60}h {minutes % 60}m"
    return f"{minutes} minutes" if minutes != 1 else "1 minute"


def incident_id(policy_name: str, started: datetime) -> str:
    return f"{policy_name}-{started:%Y%m%d-%H%M%S}"


@dataclass
class IncidentStep:
    incident: dict[str, Any] | None
    recent: list[dict[str, Any]]
    notifications: list[Notification] = field(default_factory=list)


def _webhooks_for(
    policy: HealthPolicySpec, severity: str, level: int, expected: bool
) -> tuple[Webhook, ...]:
    if expected:
        return ()
    hooks: list[Webhook] = []
    if policy.alerting.webhook is not None:
        hooks.append(policy.alerting.webhook)
    for step in policy.alerting.escalation:
        if step.level == level and step.webhook is not None:
            hooks.append(step.webhook)
    return tuple(h for h in hooks if severity_rank(severity) <= severity_rank(h.min_severity))  # type: ignore[arg-type]


def _news(
    policy: HealthPolicySpec,
    kind: NotificationKind,
    incident: Mapping[str, Any],
    message: str,
    expected: bool,
    hook_level: int,
) -> Notification:
    """A notification about the open incident as it stands (``hook_level``: the escalation
    step whose webhook is called besides the policy's own; 0 for none)."""
    return Notification(
        kind,
        dict(incident),
        message,
        expected,
        int(incident.get("escalationLevel", 1)),
        _webhooks_for(policy, str(incident["severity"]), hook_level, expected),
    )


def _resolved(
    policy: HealthPolicySpec,
    previous: Mapping[str, Any],
    history: list[dict[str, Any]],
    expected: bool,
    now: datetime,
) -> IncidentStep:
    """Close the incident: it moves to the front of the recent list."""
    started = cond.parse_rfc3339(previous.get("startedAt")) or now
    ended = damping.resolved_at(previous, now)
    seconds = max(0.0, (ended - started).total_seconds())
    closed = {
        "id": previous.get("id", ""),
        "severity": previous.get("maxSeverity", previous.get("severity", "P4")),
        "rootCause": previous.get("rootCause", ""),
        "summary": previous.get("summary", ""),
        "startedAt": previous.get("startedAt", cond.rfc3339(now)),
        "endedAt": cond.rfc3339(ended),
        "durationSeconds": int(seconds),
        "expected": bool(previous.get("expected", False)),
        # What a re-opening (damping.reopened) continues from.
        "escalationLevel": int(previous.get("escalationLevel", 1)),
    }
    for kept in ("reopened", "incidentName", "grouped"):  # the Incident that records it
        if previous.get(kept):
            closed[kept] = previous[kept]
    if previous.get("remediation"):
        # A re-opening continues its remediation budget: a flapping check must not buy
        # a fresh maxAttempts per swing.
        closed["remediation"] = [
            {k: v for k, v in e.items() if k != "verifyAt"}  # judged as it closed
            for e in previous["remediation"]
            if isinstance(e, Mapping)
        ]
    history = [closed, *history][:MAX_RECENT_INCIDENTS]
    was_expected = bool(previous.get("expected", False)) or expected
    sev = str(previous.get("severity", "P4"))
    note = Notification(
        "Resolved",
        closed,
        f"INCIDENT RESOLVED - Duration: {_duration_text(seconds)} ({closed['id']},"
        f" {closed['severity']}, root cause {closed['rootCause']})",
        was_expected,
        int(previous.get("escalationLevel", 1)),
        _webhooks_for(policy, sev, 0, was_expected),
        seconds,
    )
    return IncidentStep(None, history, [note])


def _opened(
    policy: HealthPolicySpec,
    policy_name: str,
    found: Classification,
    maintenance: str | None,
    now: datetime,
) -> tuple[dict[str, Any], Notification]:
    """A new incident and its announcement."""
    expected = maintenance is not None
    incident: dict[str, Any] = {
        "id": incident_id(policy_name, now),
        "severity": found.severity,
        "maxSeverity": found.severity,
        "rootCause": found.root_cause,
        "summary": found.summary,
        "startedAt": cond.rfc3339(now),
        "escalationLevel": 1,
        "expected": expected,
    }
    if maintenance:
        incident["maintenanceWindow"] = maintenance
    message = (
        f"INCIDENT START - {found.severity} ({SEVERITY_TEXT[found.severity]}):"
        f" root cause {found.summary}"
    )
    note = _news(policy, "Opened", incident, message, expected, 1)
    return incident, note


def _reopened(
    policy: HealthPolicySpec,
    closed: Mapping[str, Any],
    found: Classification,
    maintenance: str | None,
    now: datetime,
) -> tuple[dict[str, Any], Notification]:
    """The last resolved incident open again (damping.reopenable) and its announcement."""
    incident = damping.reopened(closed, found, maintenance)
    ended = cond.parse_rfc3339(closed.get("endedAt")) or now
    ago = _duration_text(max(0.0, (now - ended).total_seconds()))
    message = (
        f"INCIDENT REOPENED - {found.severity} ({SEVERITY_TEXT[found.severity]}):"
        f" root cause {found.summary} ({incident['id']} resolved {ago} ago,"
        f" reopened {incident['reopened']} time(s))"
    )
    return incident, _news(policy, "Opened", incident, message, maintenance is not None, 1)


def _updated(
    policy: HealthPolicySpec,
    previous: Mapping[str, Any],
    found: Classification,
    maintenance: str | None,
) -> tuple[dict[str, Any], list[Notification]]:
    """The open incident with this round's cause and severity; news if the severity
    changed or a maintenance window ended with the incident still open."""
    expected = maintenance is not None
    incident = dict(previous)
    incident["rootCause"] = found.root_cause
    incident["summary"] = found.summary
    was_expected = bool(previous.get("expected", False))
    incident["expected"] = expected
    if maintenance:
        incident["maintenanceWindow"] = maintenance
    else:
        incident.pop("maintenanceWindow", None)
    if previous.get("severity") != found.severity:
        incident["severity"] = found.severity
        worst = str(previous.get("maxSeverity", found.severity))
        if worst not in SEVERITIES or severity_rank(found.severity) < severity_rank(worst):
            worst = found.severity
        incident["maxSeverity"] = worst
        message = (
            f"incident {incident['id']} severity {previous.get('severity')} ->"
            f" {found.severity}: {found.summary}"
        )
        return incident, [_news(policy, "SeverityChanged", incident, message, expected, 0)]
    if was_expected and not expected:
        # The maintenance window ended with the incident still open: now it is news.
        message = (
            f"INCIDENT START - {found.severity} (maintenance ended, still open):"
            f" root cause {found.summary}"
        )
        return incident, [_news(policy, "Opened", incident, message, False, 1)]
    return incident, []


def _escalated(
    policy: HealthPolicySpec,
    incident: dict[str, Any],
    found: Classification,
    expected: bool,
    now: datetime,
) -> Notification | None:
    """Raise ``incident``'s escalation level to the one its age has reached; the
    announcement, if the level rose."""
    if incident.get("acknowledgedBy"):
        return None  # acknowledged: a person has it; escalation stops (docs/incidents.md)
    started = cond.parse_rfc3339(incident.get("startedAt")) or now
    open_for = now - started
    level = 1
    for step in policy.alerting.escalation:
        if open_for >= step.after:
            level = max(level, step.level)
    if level <= int(incident.get("escalationLevel", 1)):
        return None
    incident["escalationLevel"] = level
    message = (
        f"incident {incident['id']} ({found.severity}) unresolved for"
        f" {_duration_text(open_for.total_seconds())}: escalated to level {level}"
    )
    return _news(policy, "Escalated", incident, message, expected, level)


def step_incident(
    policy: HealthPolicySpec,
    policy_name: str,
    previous: Mapping[str, Any] | None,
    recent: Sequence[Mapping[str, Any]],
    found: Classification | None,
    maintenance: str | None,
    now: datetime,
) -> IncidentStep:
    """Open, update, escalate or resolve the policy's incident."""
    history = [dict(r) for r in recent][:MAX_RECENT_INCIDENTS]
    expected = maintenance is not None
    if found is None:
        if previous is None:
            return IncidentStep(None, history)
        held = damping.recovering(previous, policy.flap_damping, now)
        if held is not None:  # flap damping: resolved only after resolveAfter quiet rounds
            return IncidentStep(held, history)
        return _resolved(policy, previous, history, expected, now)
    if previous is None:
        last = damping.reopenable(history, found, policy.flap_damping, now)
        if last is not None:  # flap damping: the same incident coming back
            incident, note = _reopened(policy, last, found, maintenance, now)
            return IncidentStep(incident, history[1:], [note])
        incident, note = _opened(policy, policy_name, found, maintenance, now)
        return IncidentStep(incident, history, [note])
    incident, notes = _updated(policy, damping.relapsed(previous), found, maintenance)
    escalation = _escalated(policy, incident, found, expected, now)
    if escalation is not None:
        notes.append(escalation)
    return IncidentStep(incident, history, notes)
