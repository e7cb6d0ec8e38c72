"""One round of a policy: fold the probe results into status, conditions and notifications."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from stronghold_operator import conditions as cond
from stronghold_operator.logic.health.assessment import Assessment, assess
from stronghold_operator.logic.health.classification import CheckVerdict, classify
from stronghold_operator.logic.health.damping import recovery_note
from stronghold_operator.logic.health.findings import Finding
from stronghold_operator.logic.health.incidents import Notification, step_incident
from stronghold_operator.logic.health.overload import REASON_OVERLOADED, Load, discounted
from stronghold_operator.logic.health.redaction import redactable, scrubbed
from stronghold_operator.logic.health.samples import SampleRule
from stronghold_operator.logic.health.thresholds import count
from stronghold_operator.logic.health.vocabulary import (
    DEGRADED,
    HEALTHY,
    INCIDENT_OPEN,
    NO_SEVERITY,
    REASON_MAINTENANCE,
    SEVERITY_REASON,
)
from stronghold_operator.models.health import Check, CheckState, HealthPolicySpec
from stronghold_operator.probes.base import ProbeResult


@dataclass(frozen=True)
class Evaluation:
    """The new status (without conditions), the conditions, and what to announce."""

    status: dict[str, Any]
    conditions: list[cond.Condition]
    notifications: list[Notification]
    verdicts: list[CheckVerdict]
    severity: str
    # Checks whose slow result was the operator's own overload, not counted (overload.py).
    discounted: tuple[str, ...] = ()


def _previous_checks(status: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for c in status.get("checks") or ():
        if isinstance(c, Mapping) and isinstance(c.get("name"), str):
            out[c["name"]] = c
    return out


def _state(value: Any) -> CheckState | None:
    if value in ("Healthy", "Warning", "Critical", "Unknown"):
        return value  # type: ignore[no-any-return]
    return None


def format_latency(ms: float | None) -> str:
    if ms is None:
        return "n/a"
    if ms >= 10_000:
        return f"{ms / 1000:.0f}s"
    if ms >= 1000:
        return f"{ms / 1000:.2f}s"
    return f"{ms:.0f}ms"


def _explained(
    a: Assessment, state: CheckState, prev: Mapping[str, Any]
) -> tuple[tuple[Finding, ...], str, str]:
    """The findings, message and reason that explain the check's counted ``state``."""
    if state == a.state:
        return a.findings, a.message, a.reason
    if state in ("Warning", "Critical"):
        # Still bad until enough good results: keep what made it bad.
        findings = tuple(Finding.from_dict(f) for f in prev.get("findings") or ())
        message = f"{prev.get('message', '')} (now: {a.message})"
        return findings, message, str(prev.get("reason", a.reason))
    if a.reason == REASON_OVERLOADED:  # not an observation of the target: no threshold is pending
        same = _state(prev.get("state")) == state and prev.get("reason")
        return (), a.message, str(prev["reason"]) if same else a.reason
    # The reason holds with the state until the threshold: a reason change is a status write
    # (the observation is in observedState and the message).
    message = f"{a.message} (pending threshold)"
    same = _state(prev.get("state")) == state and prev.get("reason")
    reason = str(prev["reason"]) if same else a.reason
    return (), message, reason


def sample_rule(policy: HealthPolicySpec, one_shot: bool = False) -> SampleRule:
    """How this policy judges ratios: its minimum sample; a baseline older than three
    intervals (at least a minute: rounds run late under load) is not the previous probe."""
    max_age = max(3 * policy.interval.total_seconds(), 60.0)
    return SampleRule(policy.min_sample, max_age, one_shot)


def _fold_check(
    policy: HealthPolicySpec,
    check: Check,
    prev: Mapping[str, Any],
    result: ProbeResult,
    rule: SampleRule,
    load: Load | None = None,
) -> tuple[dict[str, Any], CheckVerdict, float | None, bool]:
    """One check's status entry, its verdict, its latency and whether the result was
    discounted (the operator's overload): the probe result assessed
    and counted against the thresholds (``prev``: the check's last status entry; ``load``:
    the operator's own lateness and stall, which may discount a slow result)."""
    a = assess(check, result, prev, rule)
    if load is not None:
        timeout = policy.timeout_of(check).total_seconds()
        interval = policy.interval.total_seconds()
        why = discounted(result, a.findings, a.latency_ms, timeout, interval, load)
        if why is not None:  # Unknown: counted as neither success nor failure
            msg = f"{a.message}; {why}"
            a = Assessment("Unknown", (), msg, REASON_OVERLOADED, a.measurements, a.latency_ms)
    counted = count(
        _state(prev.get("state")),
        int(prev.get("consecutiveSuccesses", 0) or 0),
        int(prev.get("consecutiveFailures", 0) or 0),
        a.state,
        policy.failure_threshold,
        policy.success_threshold,
    )
    findings, message, reason = _explained(a, counted.state, prev)
    entry: dict[str, Any] = {
        "name": check.name,
        "type": check.type,
        "state": counted.state,
        "observedState": a.state,
        "reason": reason,
        "message": message[:300],
        "consecutiveSuccesses": counted.successes,
        "consecutiveFailures": counted.failures,
        "findings": [f.to_dict() for f in findings][:20],
        "measurements": a.measurements,
    }
    if a.latency_ms is not None:
        entry["latencyMs"] = round(a.latency_ms, 1)
    verdict = CheckVerdict(check.name, check.type, counted.state, findings, message[:300])
    return entry, verdict, a.latency_ms, a.reason == REASON_OVERLOADED


def _fold_checks(
    policy: HealthPolicySpec,
    before: Mapping[str, Mapping[str, Any]],
    results: Mapping[str, ProbeResult],
    rule: SampleRule,
    load: Load | None,
) -> tuple[list[dict[str, Any]], list[CheckVerdict], float | None, list[str]]:
    """Every check folded: status entries, verdicts, the worst latency, and the checks
    whose result was discounted (the operator's overload)."""
    entries: list[dict[str, Any]] = []
    verdicts: list[CheckVerdict] = []
    worst: float | None = None
    discounted_checks: list[str] = []
    for check in policy.checks:
        result = results.get(check.name) or ProbeResult.failed("Error", "not probed")
        prev = before.get(check.name, {})
        entry, verdict, latency, overloaded = _fold_check(policy, check, prev, result, rule, load)
        if overloaded:
            discounted_checks.append(check.name)
        entries.append(entry)
        verdicts.append(verdict)
        if latency is not None:
            worst = max(worst or 0.0, latency)
    return entries, verdicts, worst, discounted_checks


def evaluate(
    policy: HealthPolicySpec,
    policy_name: str,
    previous_status: Mapping[str, Any],
    results: Mapping[str, ProbeResult],
    maintenance: str | None,
    now: datetime,
    secrets: Iterable[str] = (),
    *,
    one_shot: bool = False,
    load: Load | None = None,
) -> Evaluation:
    """Fold one round of probe results into the policy's status.

    ``secrets``: values (passwords, URLs with credentials) replaced by ``***`` wherever a
    probe's words carry them into the status; conditions and notifications are redacted by
    the caller, which words them. ``one_shot``: a single probe by design (``stronghold
    check``), so ratios are judged since the target started (samples.SampleRule).
    ``load``: how late the round started and how long the operator's loop stalled during
    it; a slow result it explains is not counted against the target (overload.py).
    """
    rule = sample_rule(policy, one_shot)
    folded = _fold_checks(policy, _previous_checks(previous_status), results, rule, load)
    checks_status, verdicts, worst_latency, discounted_checks = folded
    found = classify(policy, verdicts)
    prev_incident = previous_status.get("incident")
    step = step_incident(
        policy,
        policy_name,
        prev_incident if isinstance(prev_incident, Mapping) and prev_incident else None,
        list(previous_status.get("recentIncidents") or ()),
        found,
        maintenance,
        now,
    )
    severity = step.incident["severity"] if step.incident else NO_SEVERITY
    status: dict[str, Any] = {
        "checks": checks_status,
        "incident": step.incident,
        "recentIncidents": step.recent,
        "severity": severity,
        "lastProbeTime": cond.rfc3339(now),
        "worstLatency": format_latency(worst_latency),
    }
    if worst_latency is not None:
        status["worstLatencyMs"] = round(worst_latency, 1)
    status = scrubbed(status, redactable(secrets))
    # The root cause first, so the Healthy/Degraded reasons name the cause, not a symptom.
    if found is not None:
        verdicts.sort(key=lambda v: v.name != found.root_cause.split("/")[0])
    conditions = policy_conditions(verdicts, step.incident, policy)
    if discounted_checks:
        conditions[0] = overloaded_ready(discounted_checks, load or Load())
    return Evaluation(
        status, conditions, step.notifications, verdicts, severity, tuple(discounted_checks)
    )


def overloaded_ready(names: Sequence[str], load: Load) -> cond.Condition:
    """Ready on a round whose slow results were the operator's: still True (the policy is
    reconciled; ``kubectl wait`` and GitOps health stay green), the reason says the round
    did not judge those checks."""
    return cond.Condition(
        cond.READY,
        "True",
        REASON_OVERLOADED,
        f"the operator was overloaded (round {load.lateness_s:.1f}s late, event loop stalled"
        f" {load.lag_s:.2f}s): {', '.join(names)} not judged this round"[:1000],
    )


def policy_conditions(
    verdicts: Sequence[CheckVerdict],
    incident: Mapping[str, Any] | None,
    policy: HealthPolicySpec,
) -> list[cond.Condition]:
    interval = policy.interval.total_seconds()
    ready = cond.Condition(
        cond.READY,
        "True",
        cond.REASON_RECONCILED,
        f"evaluating {len(policy.checks)} check(s) every {interval:g}s",
    )
    critical = [v for v in verdicts if v.state == "Critical"]
    bad = [v for v in verdicts if v.state in ("Warning", "Critical")]
    unknown = [v for v in verdicts if v.state == "Unknown"]

    def _first_code(vs: Sequence[CheckVerdict]) -> str:
        for v in vs:
            for f in sorted(v.findings, key=lambda f: f.level != "critical"):
                return f.code
        return "ChecksFailing"

    def _list(vs: Sequence[CheckVerdict]) -> str:
        return "; ".join(f"{v.name}: {v.message}" for v in vs)[:1000]

    if critical:
        healthy = cond.Condition(HEALTHY, "False", _first_code(critical), _list(critical))
    elif unknown:
        reason = "ProbesPending"
        healthy = cond.Condition(HEALTHY, "Unknown", reason, _list(unknown))
    else:
        warn = f" ({len(bad)} with warnings)" if bad else ""
        healthy = cond.Condition(
            HEALTHY, "True", "AllChecksHealthy", f"{len(verdicts)} check(s) healthy{warn}"
        )
    if bad:
        degraded = cond.Condition(DEGRADED, "True", _first_code(bad), _list(bad))
    elif unknown and len(unknown) == len(verdicts):
        degraded = cond.Condition(DEGRADED, "Unknown", "ProbesPending", _list(unknown))
    else:
        degraded = cond.Condition(DEGRADED, "False", "NoFindings", "no check has findings")
    if incident:
        sev = str(incident.get("severity", "P4"))
        reason = REASON_MAINTENANCE if incident.get("expected") else SEVERITY_REASON[sev]
        window = (
            f" (expected: maintenance {incident.get('maintenanceWindow')})"
            if (incident.get("expected"))
            else ""
        )
        recovering = recovery_note(incident, policy)
        open_ = cond.Condition(
            INCIDENT_OPEN,
            "True",
            reason,
            f"{incident.get('id')} {sev}{window}{recovering}: {incident.get('summary', '')}"[:1000],
        )
    else:
        open_ = cond.Condition(INCIDENT_OPEN, "False", "NoIncident", "no open incident")
    return [ready, healthy, degraded, open_]
