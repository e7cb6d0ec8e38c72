"""HealthPolicy decisions: measurement -> band -> state -> severity -> incident -> status.

Everything here is pure: probe results and the previous status come in, the new status,
conditions and notifications go out. ``now`` is always an argument.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from stronghold_operator import conditions as cond
from stronghold_operator.logic.scaling import utilisation
from stronghold_operator.models.health import (
    SEVERITIES,
    Check,
    CheckState,
    HealthPolicySpec,
    HttpCheck,
    IncidentRule,
    LatencyBands,
    LowerBands,
    MemcachedCheck,
    PostgresCheck,
    PrometheusCheck,
    RabbitmqCheck,
    ResourcesCheck,
    Severity,
    UpperBands,
    Webhook,
)
from stronghold_operator.probes.base import ProbeResult, UrlResult

Level = Literal["warning", "critical"]

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
MAX_RECENT_INCIDENTS = 10
NO_SEVERITY = "None"

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


# --------------------------------------------------------------------------- findings


@dataclass(frozen=True)
class Finding:
    """Something wrong with one check, at a level; ``component`` for health documents."""

    code: str
    level: Level
    message: str
    component: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "level": self.level, "message": self.message}
        if self.component:
            out["component"] = self.component
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        level: Level = "critical" if data.get("level") == "critical" else "warning"
        return cls(
            str(data.get("code", "")), level, str(data.get("message", "")), data.get("component")
        )


@dataclass(frozen=True)
class Assessment:
    """One check's raw verdict on one probe result, plus the numbers for status."""

    state: CheckState
    findings: tuple[Finding, ...]
    message: str
    reason: str
    measurements: dict[str, Any]
    latency_ms: float | None


def _ms(d: timedelta) -> float:
    return d.total_seconds() * 1000.0


def band_upper(value: float, bands: UpperBands) -> Level | None:
    if value >= bands.critical:
        return "critical"
    if value >= bands.warning:
        return "warning"
    return None


def band_lower(value: float, bands: LowerBands) -> Level | None:
    if value < bands.critical_below:
        return "critical"
    if value < bands.warning_below:
        return "warning"
    return None


def band_latency(latency_ms: float, bands: LatencyBands) -> Level | None:
    if latency_ms >= _ms(bands.critical):
        return "critical"
    if latency_ms >= _ms(bands.warning):
        return "warning"
    return None


def _latency_finding(latency_ms: float | None, bands: LatencyBands, what: str) -> list[Finding]:
    if latency_ms is None:
        return []
    level = band_latency(latency_ms, bands)
    if level == "critical":
        limit = _ms(bands.critical)
        return [Finding("LatencyCritical", level, f"{what} {latency_ms:.0f}ms >= {limit:.0f}ms")]
    if level == "warning":
        limit = _ms(bands.warning)
        return [Finding("LatencyWarning", level, f"{what} {latency_ms:.0f}ms >= {limit:.0f}ms")]
    return []


def _failure_finding(result: ProbeResult) -> Finding | None:
    if result.failure in ("Unreachable", "Timeout"):
        return Finding(result.failure, "critical", result.message or result.failure)
    return None


def _state_of(findings: Sequence[Finding]) -> CheckState:
    if any(f.level == "critical" for f in findings):
        return "Critical"
    if findings:
        return "Warning"
    return "Healthy"


def _summary(findings: Sequence[Finding], healthy_message: str) -> str:
    if not findings:
        return healthy_message
    first = sorted(findings, key=lambda f: f.level != "critical")[0]
    more = f" (+{len(findings) - 1} more)" if len(findings) > 1 else ""
    return f"{first.message}{more}"


def _counter_delta(now_value: Any, before: Any) -> float | None:
    """Increase of a monotonic counter since the previous probe; None after a reset/no data."""
    if not isinstance(now_value, int | float) or not isinstance(before, int | float):
        return None
    delta = float(now_value) - float(before)
    return delta if delta >= 0 else None


def assess_http(spec: HttpCheck, result: ProbeResult) -> tuple[list[Finding], dict[str, Any]]:
    findings: list[Finding] = []
    urls: list[dict[str, Any]] = []
    doc = spec.health_document
    healthy_words = {w.lower() for w in doc.healthy_values} if doc else set()
    component_words = {w.lower() for w in doc.component_healthy_values} if doc else set()
    for u in result.urls:
        urls.append(_url_status(u))
        if u.failure in ("Unreachable", "Timeout"):
            findings.append(Finding(u.failure, "critical", f"{u.url}: {u.message or u.failure}"))
            continue
        if u.failure is not None or u.status_code is None:
            continue
        if u.status_code not in spec.expected_status:
            findings.append(
                Finding("UnexpectedStatus", "critical", f"{u.url}: HTTP {u.status_code}")
            )
        if (
            doc is not None
            and u.document_status is not None
            and u.document_status.lower() not in healthy_words
        ):
            findings.append(
                Finding("Unhealthy", "critical", f"{u.url}: status {u.document_status!r}")
            )
        for name, value in u.components.items():
            if value is None or value.lower() not in component_words:
                findings.append(
                    Finding(
                        "ComponentDown",
                        "critical",
                        f"{u.url}: {name} {value if value is not None else 'missing'}",
                        component=name,
                    )
                )
        findings += _latency_finding(u.latency_ms, spec.latency, u.url)
    return findings, {"urls": urls}


def _url_status(u: UrlResult) -> dict[str, Any]:
    out: dict[str, Any] = {"url": u.url}
    if u.status_code is not None:
        out["statusCode"] = u.status_code
    if u.latency_ms is not None:
        out["latencyMs"] = round(u.latency_ms, 1)
    if u.document_status is not None:
        out["documentStatus"] = u.document_status
    if u.components:
        out["components"] = {
            k: (v if v is not None else "missing") for k, v in u.components.items()
        }
    if u.failure:
        out["failure"] = u.failure
    return out


def assess_postgres(
    spec: PostgresCheck, result: ProbeResult, previous: Mapping[str, Any]
) -> tuple[list[Finding], dict[str, Any]]:
    n = result.numbers
    findings = _latency_finding(result.latency_ms, spec.latency, "connect+query")
    m: dict[str, Any] = {}
    for key in ("connectionsUsed", "maxConnections", "dbSizeBytes"):
        if key in n:
            m[key] = int(n[key])
    if "connectionsPercent" in n:
        pct = float(n["connectionsPercent"])
        m["connectionsPercent"] = round(pct, 1)
        level = band_upper(pct, spec.connections)
        if level:
            code = "ConnectionsCritical" if level == "critical" else "ConnectionsWarning"
            findings.append(Finding(code, level, f"connections {pct:.0f}% of max_connections"))
    before = previous.get("dbSizeBytes")
    if "dbSizeBytes" in n and isinstance(before, int | float):
        # Growth since the previous probe (negative after a VACUUM FULL or a drop).
        m["dbGrowthBytes"] = int(n["dbSizeBytes"]) - int(before)
    if result.sessions_by_state:
        m["sessionsByState"] = dict(result.sessions_by_state)
    blocked = sum(len(b.blocked_pids) for b in result.blockers)
    if "blockedSessions" in n:
        blocked = max(blocked, int(n["blockedSessions"]))
        m["blockedSessions"] = blocked
    if result.blockers:
        m["blockers"] = [
            {
                "pid": b.pid,
                "user": b.user,
                "application": b.application,
                "blockedPids": list(b.blocked_pids),
            }
            for b in result.blockers[:10]
        ]
    if blocked > spec.max_blocked_sessions:
        who = ", ".join(f"pid {b.pid} ({b.user})" for b in result.blockers[:3]) or "unknown"
        findings.append(
            Finding(
                "BlockedSessions", "critical", f"{blocked} blocked session(s), blocked by {who}"
            )
        )
    if result.long_queries or "longRunningQueries" in n:
        m["longRunningQueries"] = len(result.long_queries)
        m["longRunning"] = [
            {"pid": q.pid, "user": q.user, "seconds": round(q.seconds, 1)}
            for q in result.long_queries[:10]
        ]
    if result.long_queries:
        minutes = spec.long_running_after.total_seconds() / 60
        findings.append(
            Finding(
                "LongRunningQueries",
                "warning",
                f"{len(result.long_queries)} query(ies) active longer than {minutes:g} min",
            )
        )
    if result.slow_statements is None:
        m["slowStatements"] = "unavailable"
    else:
        m["slowStatements"] = "available"
        m["slowStatementsTop"] = [
            {
                "queryId": s.query_id,
                "meanMs": round(s.mean_ms, 1),
                "calls": s.calls,
                "query": s.query,
            }
            for s in result.slow_statements
        ]
    return findings, m


def assess_memcached(
    spec: MemcachedCheck, result: ProbeResult, previous: Mapping[str, Any]
) -> tuple[list[Finding], dict[str, Any]]:
    n = result.numbers
    findings: list[Finding] = []
    m: dict[str, Any] = {}
    for key in ("getHits", "cmdGet", "evictionsTotal", "currConnections", "bytes", "limitMaxBytes"):
        if key in n:
            m[key] = int(n[key])
    hits, gets = n.get("getHits"), n.get("cmdGet")
    ratio: float | None = None
    if isinstance(hits, int | float) and isinstance(gets, int | float) and gets > 0:
        m["hitRatio"] = round(100.0 * hits / gets, 2)
        ratio = float(m["hitRatio"])
    d_hits = _counter_delta(hits, previous.get("getHits"))
    d_gets = _counter_delta(gets, previous.get("cmdGet"))
    if d_hits is not None and d_gets is not None and d_gets > 0 and d_hits <= d_gets:
        # Since the previous probe: what the cache does now, not since it started.
        m["intervalHitRatio"] = round(100.0 * d_hits / d_gets, 2)
        ratio = float(m["intervalHitRatio"])
    if ratio is not None:
        level = band_lower(ratio, spec.hit_ratio)
        if level:
            findings.append(
                Finding(
                    "HitRatioLow",
                    level,
                    f"hit ratio {ratio:.1f}% below {spec.hit_ratio.warning_below:g}%",
                )
            )
    evicted = _counter_delta(n.get("evictionsTotal"), previous.get("evictionsTotal"))
    if evicted is not None:
        m["evictionsPerInterval"] = int(evicted)
        level = band_upper(evicted, spec.evictions)
        if level:
            findings.append(
                Finding("Evictions", level, f"{evicted:.0f} evictions since last probe")
            )
    used, limit = n.get("bytes"), n.get("limitMaxBytes")
    if isinstance(used, int | float) and isinstance(limit, int | float) and limit > 0:
        pct = 100.0 * used / limit
        m["memoryPercent"] = round(pct, 1)
        level = band_upper(pct, spec.memory) if spec.memory else None
        if level:
            findings.append(Finding("MemoryHigh", level, f"memory {pct:.0f}% of limit_maxbytes"))
    return findings, m


def assess_rabbitmq(
    spec: RabbitmqCheck, result: ProbeResult
) -> tuple[list[Finding], dict[str, Any]]:
    findings: list[Finding] = []
    rules = {q.name: q for q in spec.queues}
    queues: list[dict[str, Any]] = []
    for q in result.queues:
        entry: dict[str, Any] = {"name": q.name}
        rule = rules.get(q.name)
        if q.messages is None:
            entry["missing"] = True
            queues.append(entry)
            if rule is not None:
                findings.append(Finding("QueueMissing", "critical", f"queue {q.name} not found"))
            continue
        entry["messages"] = q.messages
        if q.consumers is not None:
            entry["consumers"] = q.consumers
        if q.unacknowledged is not None:
            entry["unacknowledged"] = q.unacknowledged
        queues.append(entry)
        depth = rule.depth if rule else spec.management.depth if spec.management else None
        level = band_upper(q.messages, depth) if depth else None
        if level:
            findings.append(
                Finding("QueueDepthHigh", level, f"queue {q.name}: {q.messages} messages")
            )
        if rule and q.consumers is not None and q.consumers < rule.min_consumers:
            findings.append(
                Finding(
                    "ConsumersLow",
                    "warning",
                    f"queue {q.name}: {q.consumers} consumer(s) < {rule.min_consumers}",
                )
            )
    return findings, {"queues": queues[:50]}


def _series_name(labels: Mapping[str, str]) -> str:
    shown = {k: v for k, v in labels.items() if k != "__name__"}
    return ",".join(f"{k}={v}" for k, v in sorted(shown.items())) or "value"


def assess_prometheus(
    spec: PrometheusCheck, result: ProbeResult
) -> tuple[list[Finding], dict[str, Any]]:
    findings: list[Finding] = []
    series = [{"labels": _series_name(s.labels), "value": round(s.value, 4)} for s in result.series]
    for s in result.series:
        if spec.bands is not None:
            level = band_upper(s.value, spec.bands)
        else:
            assert spec.lower_bands is not None
            level = band_lower(s.value, spec.lower_bands)
        if level:
            code = "MetricCritical" if level == "critical" else "MetricWarning"
            text = f"{_series_name(s.labels)}: {s.value:.4g}{spec.unit}"
            findings.append(Finding(code, level, text))
    if not result.series and spec.empty_result in ("Warning", "Critical"):
        empty: Level = "critical" if spec.empty_result == "Critical" else "warning"
        findings.append(Finding("NoData", empty, "the query returned no data"))
    m: dict[str, Any] = {"series": series[:20]}
    worst = sorted(findings, key=lambda f: f.level != "critical")[:5]
    return worst, m


def _replica_percent(used: float, basis: float) -> float | None:
    return 100.0 * used / basis if basis > 0 else None


def assess_resources(
    spec: ResourcesCheck, result: ProbeResult
) -> tuple[list[Finding], dict[str, Any]]:
    """Utilisation of the replicas' basis: requests (Kubernetes) or limits (Docker), the
    ScalingPolicy's basis; averaged as HPA does, or the busiest replica (``aggregate: max``)."""
    ref = spec.target_ref
    basis = "limits" if ref.is_compose else "requests"
    unit = "container" if ref.is_compose else "pod"
    replicas = result.replicas
    per = [
        (
            r.name,
            _replica_percent(r.cpu_cores, r.cpu_basis_cores),
            _replica_percent(r.memory_bytes, r.memory_basis_bytes),
        )
        for r in replicas
    ]
    m: dict[str, Any] = {
        "target": ref.describe(),
        "basis": basis,
        "aggregate": spec.aggregate,
        "replicas": len(replicas),
        "cpuCores": round(sum(r.cpu_cores for r in replicas), 4),
        "memoryBytes": int(sum(r.memory_bytes for r in replicas)),
        "perReplica": [
            {
                "name": name,
                **({"cpuPercent": round(c, 1)} if c is not None else {}),
                **({"memoryPercent": round(mem, 1)} if mem is not None else {}),
            }
            for name, c, mem in per[:10]
        ],
    }
    values: dict[str, tuple[float, str]] = {}
    if spec.aggregate == "max":
        for key, known in (
            ("cpu", [(c, name) for name, c, _ in per if c is not None]),
            ("memory", [(mem, name) for name, _, mem in per if mem is not None]),
        ):
            if known:
                value, name = max(known)
                values[key] = (value, f"{name}, the busiest of {len(replicas)} {unit}(s)")
    elif replicas:
        sample = utilisation(replicas, max(r.timestamp for r in replicas))
        how = f"average of {len(replicas)} {unit}(s)"
        if sample.cpu_percent is not None:
            values["cpu"] = (sample.cpu_percent, how)
        if sample.memory_percent is not None:
            values["memory"] = (sample.memory_percent, how)
    findings: list[Finding] = []
    for key, label, bands, prefix in (
        ("cpu", "CPU", spec.cpu, "Cpu"),
        ("memory", "memory", spec.memory, "Memory"),
    ):
        if key not in values:
            continue
        value, how = values[key]
        m[f"{key}Percent"] = round(value, 1)
        level = band_upper(value, bands)
        if level:
            limit = bands.critical if level == "critical" else bands.warning
            findings.append(
                Finding(
                    f"{prefix}{level.capitalize()}",
                    level,
                    f"{label} {value:.0f}% of {basis} >= {limit:g}% ({how})",
                )
            )
    return findings, m


def assess(check: Check, result: ProbeResult, previous: Mapping[str, Any] | None) -> Assessment:
    """Apply the check's bands to one probe result (``previous``: the check's last status)."""
    prev = dict((previous or {}).get("measurements") or {})
    latency = result.latency_ms
    failure = _failure_finding(result)
    if check.resources is not None:
        # Reading metrics is not a service's response time: keep it out of worstLatency.
        latency = None
    if result.failure in ("RateLimited", "Refused", "Error"):
        reason = result.reason or {"RateLimited": REASON_RATE_LIMITED, "Refused": "Refused"}.get(
            result.failure, "ProbeError"
        )
        m: dict[str, Any] = {}
        if result.urls:
            m["urls"] = [_url_status(u) for u in result.urls]
        if result.retry_after_s is not None:
            m["retryAfterSeconds"] = int(result.retry_after_s)
        return Assessment("Unknown", (), result.message or reason, reason, m, latency)
    if failure is not None and not result.urls:
        # Keep the counters of the last good probe so deltas survive an outage.
        kept = {k: v for k, v in prev.items() if k in ("getHits", "cmdGet", "evictionsTotal")}
        return Assessment("Critical", (failure,), failure.message, failure.code, kept, latency)
    if check.http is not None:
        findings, m = assess_http(check.http, result)
        if result.urls:
            ok = [u.latency_ms for u in result.urls if u.latency_ms is not None]
            latency = max(ok) if ok else None
        unanswered = [u for u in result.urls if u.failure in ("RateLimited", "Refused", "Error")]
        if not findings and unanswered:
            # No answer this time (429, a refused target, a probe error): not "down".
            first = unanswered[0]
            retry = max((u.retry_after_s or 0 for u in result.urls), default=0)
            if retry:
                m["retryAfterSeconds"] = int(retry)
            if first.failure == "RateLimited":
                msg, reason = "rate limited (429); no answer this time", REASON_RATE_LIMITED
            else:
                reason = "Refused" if first.failure == "Refused" else "ProbeError"
                msg = f"{first.url}: {first.message}"
            return Assessment("Unknown", (), msg, reason, m, latency)
        healthy = f"{len(result.urls)} URL(s) answered as expected"
    elif check.postgres is not None:
        findings, m = assess_postgres(check.postgres, result, prev)
        healthy = "database answering"
    elif check.memcached is not None:
        findings, m = assess_memcached(check.memcached, result, prev)
        healthy = "cache answering"
    elif check.prometheus is not None:
        spec = check.prometheus
        if not result.series and spec.empty_result == "Unknown":
            msg = "the query returned no data"
            return Assessment("Unknown", (), msg, "NoData", {"series": []}, latency)
        findings, m = assess_prometheus(spec, result)
        healthy = f"{len(result.series)} series within bands"
    elif check.resources is not None:
        findings, m = assess_resources(check.resources, result)
        if "cpuPercent" not in m and "memoryPercent" not in m:
            msg = f"{m['target']}: no replica has a usable basis"
            return Assessment("Unknown", (), msg, "NoMetrics", m, latency)
        # No numbers here: a message that changes every round would be a status write
        # every round (the numbers are in measurements, written with the heartbeat).
        unit = "container" if check.resources.target_ref.is_compose else "pod"
        healthy = f"CPU and memory within bands of {m['basis']} ({m['replicas']} {unit}(s))"
    else:
        assert check.rabbitmq is not None
        findings, m = assess_rabbitmq(check.rabbitmq, result)
        healthy = "broker answering"
    state = _state_of(findings)
    reason = sorted(findings, key=lambda f: f.level != "critical")[0].code if findings else "Ok"
    return Assessment(state, tuple(findings), _summary(findings, healthy), reason, m, latency)


# --------------------------------------------------------------------------- thresholds


@dataclass(frozen=True)
class Counted:
    state: CheckState
    successes: int
    failures: int


def count(
    previous_state: CheckState | None,
    successes: int,
    failures: int,
    observed: CheckState,
    failure_threshold: int,
    success_threshold: int,
) -> Counted:
    """Consecutive-result counting, like Kubernetes probes.

    A bad result (Warning/Critical) changes a good state only after ``failure_threshold``
    consecutive bad results; a good one ends a bad state after ``success_threshold``
    consecutive good results. Unknown (no answer this time) counts as neither. While a
    state is already bad, the level follows the observation at once (Warning <-> Critical).
    """
    prev: CheckState = previous_state or "Unknown"
    if observed == "Unknown":
        return Counted(prev, successes, failures)
    if observed == "Healthy":
        succ = successes + 1
        if prev == "Healthy" or succ >= success_threshold:
            return Counted("Healthy", succ, 0)
        return Counted(prev, succ, 0)
    fail = failures + 1
    if fail >= failure_threshold or prev in ("Warning", "Critical"):
        return Counted(observed, 0, fail)
    return Counted(prev, 0, fail)


# --------------------------------------------------------------------------- classification


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


def _rank(sev: Severity) -> int:
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
        severities[v.name] = min((severity_of(f, check, rules) for f in v.findings), key=_rank)
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
    root = min(roots, key=lambda n: (_rank(severities[n]), order.get(n, 0)))
    severity = min(severities.values(), key=_rank)
    affected = tuple(n for n in severities if n != root)
    summary = f"{root}: {by_name[root].message}"
    if affected:
        summary += f"; also affected: {', '.join(affected)}"
    return Classification(severity, root, summary, affected)


# --------------------------------------------------------------------------- incidents


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
    return tuple(h for h in hooks if _rank(severity) <= _rank(h.min_severity))  # type: ignore[arg-type]


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
    if previous is None and found is None:
        return IncidentStep(None, history)
    if previous is not None and found is None:
        started = cond.parse_rfc3339(previous.get("startedAt")) or now
        seconds = max(0.0, (now - started).total_seconds())
        closed = {
            "id": previous.get("id", ""),
            "severity": previous.get("maxSeverity", previous.get("severity", "P4")),
            "rootCause": previous.get("rootCause", ""),
            "summary": previous.get("summary", ""),
            "startedAt": previous.get("startedAt", cond.rfc3339(now)),
            "endedAt": cond.rfc3339(now),
            "durationSeconds": int(seconds),
            "expected": bool(previous.get("expected", False)),
        }
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
    assert found is not None
    notes: list[Notification] = []
    if previous is None:
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
        notes.append(
            Notification(
                "Opened",
                dict(incident),
                f"INCIDENT START - {found.severity} ({SEVERITY_TEXT[found.severity]}):"
                f" root cause {found.summary}",
                expected,
                1,
                _webhooks_for(policy, found.severity, 1, expected),
            )
        )
        return IncidentStep(incident, history, notes)
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
        if worst not in SEVERITIES or _rank(found.severity) < _rank(worst):
            worst = found.severity
        incident["maxSeverity"] = worst
        notes.append(
            Notification(
                "SeverityChanged",
                dict(incident),
                f"incident {incident['id']} severity {previous.get('severity')} ->"
                f" {found.severity}: {found.summary}",
                expected,
                int(incident.get("escalationLevel", 1)),
                _webhooks_for(policy, found.severity, 0, expected),
            )
        )
    elif was_expected and not expected:
        # The maintenance window ended with the incident still open: now it is news.
        notes.append(
            Notification(
                "Opened",
                dict(incident),
                f"INCIDENT START - {found.severity} (maintenance ended, still open):"
                f" root cause {found.summary}",
                False,
                int(incident.get("escalationLevel", 1)),
                _webhooks_for(policy, found.severity, 1, False),
            )
        )
    started = cond.parse_rfc3339(incident.get("startedAt")) or now
    open_for = now - started
    level = 1
    for step in policy.alerting.escalation:
        if open_for >= step.after:
            level = max(level, step.level)
    current = int(incident.get("escalationLevel", 1))
    if level > current:
        incident["escalationLevel"] = level
        notes.append(
            Notification(
                "Escalated",
                dict(incident),
                f"incident {incident['id']} ({found.severity}) unresolved for"
                f" {_duration_text(open_for.total_seconds())}: escalated to level {level}",
                expected,
                level,
                _webhooks_for(policy, found.severity, level, expected),
            )
        )
    return IncidentStep(incident, history, notes)


# --------------------------------------------------------------------------- whole policy


@dataclass(frozen=True)
class Evaluation:
    """The new status (without conditions), the conditions, and what to announce."""

    status: dict[str, Any]
    conditions: list[cond.Condition]
    notifications: list[Notification]
    verdicts: list[CheckVerdict]
    severity: str


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


def evaluate(
    policy: HealthPolicySpec,
    policy_name: str,
    previous_status: Mapping[str, Any],
    results: Mapping[str, ProbeResult],
    maintenance: str | None,
    now: datetime,
    secrets: Iterable[str] = (),
) -> Evaluation:
    """Fold one round of probe results into the policy's status.

    ``secrets``: values (passwords, URLs with credentials) replaced by ``***`` wherever a
    probe's words carry them into the status; conditions and notifications are redacted by
    the caller, which words them.
    """
    before = _previous_checks(previous_status)
    checks_status: list[dict[str, Any]] = []
    verdicts: list[CheckVerdict] = []
    worst_latency: float | None = None
    for check in policy.checks:
        prev = before.get(check.name, {})
        result = results.get(check.name) or ProbeResult.failed("Error", "not probed")
        a = assess(check, result, prev)
        counted = count(
            _state(prev.get("state")),
            int(prev.get("consecutiveSuccesses", 0) or 0),
            int(prev.get("consecutiveFailures", 0) or 0),
            a.state,
            policy.failure_threshold,
            policy.success_threshold,
        )
        if counted.state == a.state:
            findings = a.findings
            message, reason = a.message, a.reason
        elif counted.state in ("Warning", "Critical"):
            # Still bad until enough good results: keep what made it bad.
            findings = tuple(Finding.from_dict(f) for f in prev.get("findings") or ())
            message = f"{prev.get('message', '')} (now: {a.message})"
            reason = str(prev.get("reason", a.reason))
        else:
            # The state holds until the threshold is reached; so does the reason that
            # explains it (the observation is in observedState and the message). A reason
            # that followed every stray slow answer was a status write per round.
            findings = ()
            message = f"{a.message} (pending threshold)"
            same = _state(prev.get("state")) == counted.state and prev.get("reason")
            reason = str(prev["reason"]) if same else a.reason
        if a.latency_ms is not None:
            worst_latency = max(worst_latency or 0.0, a.latency_ms)
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
        checks_status.append(entry)
        verdicts.append(
            CheckVerdict(check.name, check.type, counted.state, findings, message[:300])
        )
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
    status = _scrubbed(status, _redactable(secrets))
    # The root cause first, so the Healthy/Degraded reasons name the cause, not a symptom.
    if found is not None:
        verdicts.sort(key=lambda v: v.name != found.root_cause)
    conditions = policy_conditions(verdicts, step.incident, policy)
    return Evaluation(status, conditions, step.notifications, verdicts, severity)


def _scrubbed(value: Any, secrets: Sequence[str]) -> Any:
    """A copy without "" values inside objects (the apiserver (1.20) reads "" in a patch as
    null, which a string field's schema then refuses) and with ``secrets`` redacted from
    every string, keys included: one walk, every round."""
    if isinstance(value, str):
        return _redact_sorted(value, secrets) if secrets else value
    if isinstance(value, dict):
        return {_scrubbed(k, secrets): _scrubbed(v, secrets) for k, v in value.items() if v != ""}
    if isinstance(value, list):
        return [_scrubbed(v, secrets) for v in value]
    return value


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
        open_ = cond.Condition(
            INCIDENT_OPEN,
            "True",
            reason,
            f"{incident.get('id')} {sev}{window}: {incident.get('summary', '')}"[:1000],
        )
    else:
        open_ = cond.Condition(INCIDENT_OPEN, "False", "NoIncident", "no open incident")
    return [ready, healthy, degraded, open_]


# --------------------------------------------------------------------------- webhooks


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every known secret value in ``text`` (defence in depth for messages)."""
    return _redact_sorted(text, _redactable(secrets))


def _redactable(secrets: Iterable[str]) -> list[str]:
    """The values worth redacting, longest first (a secret may contain a shorter one);
    one or two characters would mangle every message instead."""
    return sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True)


def _redact_sorted(text: str, secrets: Sequence[str]) -> str:
    for s in secrets:
        if s in text:
            text = text.replace(s, "***")
    return text


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
    if note.duration_s is not None:
        body["durationSeconds"] = int(note.duration_s)
    return body


def retry_delays(retries: int, base: float = 0.5, cap: float = 10.0) -> list[float]:
    """Exponential backoff between webhook attempts (pure; the caller sleeps)."""
    return [min(cap, base * (2**i)) for i in range(retries)]


def missing_secret_backoff(attempt: int, interval: timedelta) -> float:
    """Delay before retrying a policy whose Secret is missing: 5s doubling, capped."""
    cap = max(5.0, min(300.0, interval.total_seconds() * 4))
    return float(min(cap, 5.0 * (2 ** max(0, attempt))))
