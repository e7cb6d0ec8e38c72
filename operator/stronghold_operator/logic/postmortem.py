"""The operations guide's post-mortem template, filled from an Incident object. Pure.

What the operator knows (summary, duration, root cause, timeline, evidence, the actions
recorded) is filled in; impact, action items and lessons are left for a person, with the
guide's prompts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stronghold_operator import conditions as cond
from stronghold_operator.logic.incident import short_duration

_SEVERITY = {"P1": "Critical", "P2": "High", "P3": "Medium", "P4": "Low"}
# Timeline entries that are things people or the operator did (the "actions taken").
_ACTIONS = ("Acknowledged", "Escalated", "Resolved", "Remediation")


def _hhmm(value: Any) -> str:
    when = cond.parse_rfc3339(value)
    return "--:--" if when is None else when.strftime("%H:%M")


def _day(value: Any) -> str:
    when = cond.parse_rfc3339(value)
    return "unknown date" if when is None else when.strftime("%Y-%m-%d")


def _duration(status: Mapping[str, Any]) -> str:
    seconds = status.get("durationSeconds")
    if not isinstance(seconds, int):
        return "still open"
    hours, rest = divmod(seconds, 3600)
    return f"{hours} hours {rest // 60} minutes ({short_duration(seconds)})"


def _mib(value: Any) -> str:
    return f"{int(value) / 2**20:.0f} MiB" if isinstance(value, int) else "?"


def usage_line(u: Mapping[str, Any]) -> str:
    """One workload's usage in words (the post-mortem's and ``stronghold incident show``'s):
    ``Deployment/web (policy's): 3 pods, 3 measured: CPU 250m (83% of requests), ...``."""
    head = f"{u.get('kind')}/{u.get('name')}" + (" (policy's)" if u.get("policyTarget") else "")
    pods = f"{u.get('pods', 0)} pod(s), {u.get('measuredPods', 0)} measured"
    if not u.get("measuredPods"):
        return f"{head}: {pods}"

    def of(kind: str) -> str:
        parts = [
            f"{u[key]}% of {basis}"
            for key, basis in (
                (f"{kind}PercentOfRequests", "requests"),
                (f"{kind}PercentOfLimits", "limits"),
            )
            if key in u
        ]
        return f" ({', '.join(parts)})" if parts else ""

    return (
        f"{head}: {pods}: CPU {u.get('cpuMillicores', '?')}m{of('cpu')},"
        f" memory {_mib(u.get('memoryBytes'))}{of('memory')}"
    )


def _evidence(evidence: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    rollouts = evidence.get("rollouts") or []
    lines.append("### Recent rollouts (last 24 h)")
    lines += [
        f"- {r.get('at', '')} {r.get('kind')}/{r.get('name')} revision {r.get('revision') or '?'}"
        f" ({r.get('object', '')})"
        for r in rollouts
    ] or ["- none"]
    lines.append("")
    lines.append("### Restarted or OOMKilled containers")
    lines += [
        f"- {r.get('pod')}/{r.get('container')}: {r.get('restarts', 0)} restart(s),"
        f" last {r.get('lastReason') or 'unknown'}"
        + (f" (exit {r['exitCode']})" if "exitCode" in r else "")
        for r in evidence.get("restarts") or []
    ] or ["- none"]
    lines.append("")
    lines.append("### Warning Events (last hour)")
    lines += [
        f"- {e.get('lastSeen', '')} {e.get('object')} {e.get('reason')} x{e.get('count', 1)}:"
        f" {e.get('message', '')}"
        for e in evidence.get("warningEvents") or []
    ] or ["- none"]
    lines.append("")
    if "usage" in evidence:  # not in Incidents opened before it was gathered
        lines.append("### Resource usage of the workloads")
        lines += [f"- {usage_line(u)}" for u in evidence["usage"]] or ["- none measured"]
        lines.append("")
    lines.append("### Failing checks at open time")
    for c in evidence.get("checks") or []:
        lines.append(f"- {c.get('name')} ({c.get('type')}): {c.get('state')} {c.get('reason')}")
        if c.get("message"):
            lines.append(f"  - {c['message']}")
        for key, value in (c.get("measurements") or {}).items():
            lines.append(f"  - {key}: {value}")
    if not evidence.get("checks"):
        lines.append("- none recorded")
    for err in evidence.get("errors") or []:
        lines.append(f"- (not gathered: {err})")
    return lines


def _summary(incident: Mapping[str, Any], severity: str, root: str) -> list[str]:
    meta = incident.get("metadata") or {}
    spec = incident.get("spec") or {}
    status = incident.get("status") or {}
    acked = status.get("acknowledgedBy") or "no"
    if status.get("acknowledgedAt"):
        acked += f" at {_hhmm(status.get('acknowledgedAt'))}"
    return [
        "## Summary",
        f"- Incident: {meta.get('namespace', '')}/{meta.get('name', '')}"
        f" (HealthPolicy {spec.get('healthPolicy', '?')})",
        f"- Severity: {severity} ({_SEVERITY.get(severity, 'unknown')}), state"
        f" {status.get('state', 'unknown')}",
        f"- Duration: {_duration(status)}",
        "- Impact: _X users affected (to be completed)_",
        f"- Root Cause: {root}",
        f"- Affected checks: {', '.join(status.get('affectedChecks') or []) or 'none'}",
        f"- Acknowledged: {acked}",
        f"- Escalation level reached: {status.get('escalationLevel', 1)}",
    ]


_BLANKS = [
    "## Impact",
    "_Users affected, duration of the impact, data affected (to be completed)._",
    "",
    "## Action Items",
    "1. [Action 1] - Assigned to [Person] - Due [Date]",
    "2. [Action 2] - Assigned to [Person] - Due [Date]",
    "",
    "## Lessons Learned",
    "_What we learned and how to prevent it in future (to be completed)._",
    "",
]


def render(incident: Mapping[str, Any]) -> str:
    """The post-mortem of ``incident`` (an Incident object as the API returns it)."""
    status = incident.get("status") or {}
    severity = str(status.get("maxSeverity") or status.get("severity") or "P?")
    root = str(status.get("rootCause") or "unknown")
    summary = status.get("summary") or ""
    title = f"{severity} {root}: {summary}".strip().rstrip(":")[:120]
    timeline = status.get("timeline") or []
    actions = [e for e in timeline if e.get("type") in _ACTIONS]
    evidence = status.get("evidence") or {}
    lines = [
        f"# Incident Post-Mortem: {_day(status.get('startedAt'))} - {title}",
        "",
        *_summary(incident, severity, root),
        "",
        "## Timeline",
    ]
    lines += [
        f"- {_hhmm(e.get('time'))} - {e.get('type')}: {e.get('message', '')}" for e in timeline
    ]
    if not timeline:
        lines.append("- (no timeline recorded)")
    lines += [
        "",
        "## Root Cause",
        f"Check `{root}`: {summary}",
        "",
        "_Detailed analysis (to be completed)._",
        "",
        "## Evidence",
        f"Gathered at {evidence.get('gatheredAt', 'open time')}.",
        "",
        *_evidence(evidence),
        "",
        "## Actions Taken",
    ]
    lines += [f"- {_hhmm(e.get('time'))} - {e.get('message', '')}" for e in actions] or [
        "- none recorded"
    ]
    return "\n".join([*lines, "", *_BLANKS])
