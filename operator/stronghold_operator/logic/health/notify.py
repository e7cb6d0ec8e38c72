"""Webhook bodies (generic or Alertmanager v2) built from an incident notification."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from stronghold_operator import conditions as cond
from stronghold_operator.logic.health.classification import CheckVerdict
from stronghold_operator.logic.health.incidents import Notification
from stronghold_operator.logic.health.vocabulary import SEVERITY_TEXT
from stronghold_operator.models.health import Webhook


def webhook_body(
    note: Notification,
    webhook: Webhook,
    namespace: str,
    policy_name: str,
    verdicts: Sequence[CheckVerdict],
    now: datetime,
) -> Any:
    """The JSON body of one webhook call: generic, or an Alertmanager v2 alert list.

    Bodies carry names, states and messages only; credentials never reach them because
    they never reach the status or messages they are built from.
    """
    inc = note.incident
    severity = str(inc.get("severity", "P4"))
    if webhook.format == "alertmanager":
        alert: dict[str, Any] = {
            "labels": {
                **webhook.labels,
                "alertname": "StrongholdIncident",
                "severity": severity,
                "namespace": namespace,
                "healthpolicy": policy_name,
                "incident": str(inc.get("id", "")),
                "root_cause": str(inc.get("rootCause", "")),
            },
            "annotations": {
                "summary": f"{severity} {SEVERITY_TEXT.get(severity, '')}",
                "description": note.message,
                "escalation_level": str(note.level),
            },
            "startsAt": str(inc.get("startedAt", cond.rfc3339(now))),
        }
        if note.kind == "Resolved":
            alert["endsAt"] = str(inc.get("endedAt", cond.rfc3339(now)))
        return [alert]
    body: dict[str, Any] = {
        "version": "1",
        "event": note.kind,
        "sentAt": cond.rfc3339(now),
        "policy": {"namespace": namespace, "name": policy_name},
        "incident": dict(inc),
        "escalationLevel": note.level,
        "message": note.message,
        "checks": [{"name": v.name, "state": v.state, "message": v.message} for v in verdicts],
    }
    if webhook.labels:
        body["labels"] = dict(webhook.labels)
    if note.duration_s is not None:
        body["durationSeconds"] = int(note.duration_s)
    return body
