"""Severity P1-P4 of findings and one dependency-aware incident classification per policy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from stronghold_operator.logic.health.findings import Finding
from stronghold_operator.models.health import (
    SEVERITIES,
    Check,
    CheckState,
    HealthPolicySpec,
    IncidentRule,
    Severity,
)

# The guide's incident table as rules; user rules are tried first.
DEFAULT_RULES: tuple[IncidentRule, ...] = (
    IncidentRule(
        severity="P1",
        findings=["Unreachable", "Timeout", "UnexpectedStatus", "Unhealthy"],
        check_types=["http"],
    ),
    IncidentRule(severity="P1", findings=["Unreachable", "Timeout"], check_types=["postgres"]),
    IncidentRule(
        severity="P2",
        findings=["Unreachable", "Timeout", "QueueMissing"],
        check_types=["memcached", "rabbitmq"],
    ),
    IncidentRule(severity="P2", findings=["ConnectionsCritical", "BlockedSessions"]),
    IncidentRule(severity="P2", findings=["ComponentDown"], check_types=["http"]),
    IncidentRule(
        severity="P3",
        findings=[
            "LatencyCritical",
            "HitRatioLow",
            "QueueDepthHigh",
            "ConsumersLow",
            "LongRunningQueries",
            "CpuCritical",
            "MemoryCritical",
        ],
    ),
)


@dataclass(frozen=True)
class CheckVerdict:
    """A check's effective state and the findings that explain it."""

    name: str
    type: str
    state: CheckState
    findings: tuple[Finding, ...]
    message: str


@dataclass(frozen=True)
class Classification:
    severity: Severity
    root_cause: str
    summary: str
    affected: tuple[str, ...]


def severity_of(finding: Finding, check: Check, rules: Sequence[IncidentRule]) -> Severity:
    for rule in rules:
        if finding.code not in rule.findings:
            continue
        if rule.check_types is not None and check.type not in rule.check_types:
            continue
        if rule.checks is not None and check.name not in rule.checks:
            continue
        return rule.severity
    if check.logs is not None and finding.code == "SecurityEvent":
        # The rule's own band says how bad it is (user incident rules above still win).
        for r in check.logs.effective_rules():
            if r.name == finding.component and r.severity is not None:
                return r.severity
    return "P3" if finding.level == "critical" else "P4"


def rules_of(policy: HealthPolicySpec) -> list[IncidentRule]:
    rules = list(policy.incident_rules.rules)
    if policy.incident_rules.include_defaults:
        rules += DEFAULT_RULES
    return rules


_COMPONENT_TYPES = {"database": "postgres", "cache": "memcached", "queue": "rabbitmq"}


def dependencies(policy: HealthPolicySpec, check: Check) -> list[str]:
    """Checks this one depends on: explicit ``dependsOn``; by default a web check depends on
    every database, cache and queue check of the policy (the web tier needs them)."""
    if check.depends_on is not None:
        return list(check.depends_on)
    if check.type == "http":
        return [c.name for c in policy.checks if c.type in ("postgres", "memcached", "rabbitmq")]
    return []


def component_check(policy: HealthPolicySpec, check: Check, component: str) -> str | None:
    """The check a health-document component stands for (explicit, else by the guide's name)."""
    doc = check.http.health_document if check.http else None
    for comp in doc.components if doc else ():
        if comp.name == component and comp.check:
            return comp.check
    wanted = _COMPONENT_TYPES.get(component)
    return next((c.name for c in policy.checks if c.type == wanted), None)


def severity_rank(sev: Severity) -> int:
    return SEVERITIES.index(sev)


def classify(policy: HealthPolicySpec, verdicts: Sequence[CheckVerdict]) -> Classification | None:
    """One incident for the whole policy, or None; root cause by dependency.

    A failing check whose failure is explained by a Critical dependency (or whose health
    document names a Critical component's check) is a consequence, not a cause: the database
    down and the web health failing is one P1 whose root cause is the database.
    """
    rules = rules_of(policy)
    by_name = {v.name: v for v in verdicts}
    severities: dict[str, Severity] = {}
    for v in verdicts:
        check = policy.check(v.name)
        if check is None or v.state not in ("Warning", "Critical") or not v.findings:
            continue
        severities[v.name] = min(
            (severity_of(f, check, rules) for f in v.findings), key=severity_rank
        )
    if not severities:
        return None

    def explained(name: str) -> bool:
        check = policy.check(name)
        if check is None:
            return False
        deps = set(dependencies(policy, check))
        for f in by_name[name].findings:
            if f.component:
                target = component_check(policy, check, f.component)
                if target:
                    deps.add(target)
        return any(by_name.get(d) and by_name[d].state == "Critical" for d in deps)

    roots = [n for n in severities if not explained(n)] or list(severities)
    order = {c.name: i for i, c in enumerate(policy.checks)}
    root = min(roots, key=lambda n: (severity_rank(severities[n]), order.get(n, 0)))
    severity = min(severities.values(), key=severity_rank)
    affected = tuple(n for n in severities if n != root)
    summary = f"{root}: {by_name[root].message}"
    root_cause = _rule_of(policy, root, by_name[root].findings) or root
    if affected:
        summary += f"; also affected: {', '.join(affected)}"
    return Classification(severity, root_cause, summary, affected)


def _rule_of(policy: HealthPolicySpec, name: str, findings: Sequence[Finding]) -> str | None:
    """``check/rule`` for a logs check: a security incident's root cause is the rule."""
    check = policy.check(name)
    if check is None or check.logs is None:
        return None
    rules = check.logs.effective_rules()
    order = {r.name: (severity_rank(r.severity or "P4"), i) for i, r in enumerate(rules)}
    named = [f.component for f in findings if f.code == "SecurityEvent" and f.component]
    if not named:
        return None
    return f"{name}/{min(named, key=lambda r: order.get(r, (9, 0)))}"
