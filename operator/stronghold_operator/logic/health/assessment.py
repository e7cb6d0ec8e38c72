"""One check's verdict on one probe result: state, findings, reason, measurements."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stronghold_operator.logic.health import checks
from stronghold_operator.logic.health.findings import Finding
from stronghold_operator.logic.health.samples import SampleRule
from stronghold_operator.logic.health.vocabulary import REASON_RATE_LIMITED
from stronghold_operator.models.health import (
    Check,
    CheckState,
    HttpCheck,
    PrometheusCheck,
    ResourcesCheck,
)
from stronghold_operator.probes.base import ProbeResult


@dataclass(frozen=True)
class Assessment:
    """One check's raw verdict on one probe result, plus the numbers for status."""

    state: CheckState
    findings: tuple[Finding, ...]
    message: str
    reason: str
    measurements: dict[str, Any]
    latency_ms: float | None


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


_NO_ANSWER = ("RateLimited", "Refused", "Error")


def _judged(
    findings: Sequence[Finding], m: dict[str, Any], healthy: str, latency: float | None
) -> Assessment:
    """The verdict of an answered probe: the worst finding names the state and the reason."""
    state = _state_of(findings)
    reason = sorted(findings, key=lambda f: f.level != "critical")[0].code if findings else "Ok"
    return Assessment(state, tuple(findings), _summary(findings, healthy), reason, m, latency)


def _no_answer_reason(failure: str | None) -> str:
    if failure == "RateLimited":
        return REASON_RATE_LIMITED
    if failure == "Refused":
        return "Refused"
    return "ProbeError"


def _no_answer(result: ProbeResult, latency: float | None) -> Assessment:
    """The probe got no answer this time (429, a refused target, a probe error): Unknown."""
    reason = result.reason or _no_answer_reason(result.failure)
    m: dict[str, Any] = {}
    if result.urls:
        m["urls"] = [checks.url_status(u) for u in result.urls]
    if result.retry_after_s is not None:
        m["retryAfterSeconds"] = int(result.retry_after_s)
    return Assessment("Unknown", (), result.message or reason, reason, m, latency)


def _down(failure: Finding, previous: Mapping[str, Any], latency: float | None) -> Assessment:
    """The target did not answer at all: Critical."""
    # Keep the counters of the last good probe so deltas survive an outage.
    # (A baseline kept too long is stale by then: samples.window starts afresh.)
    kept = {k: v for k, v in previous.items() if k in checks.BASELINE}
    return Assessment("Critical", (failure,), failure.message, failure.code, kept, latency)


def _assess_http_check(spec: HttpCheck, result: ProbeResult, latency: float | None) -> Assessment:
    findings, m = checks.assess_http(spec, result)
    if result.urls:
        ok = [u.latency_ms for u in result.urls if u.latency_ms is not None]
        latency = max(ok) if ok else None
    unanswered = [u for u in result.urls if u.failure in _NO_ANSWER]
    if not findings and unanswered:
        # No answer this time (429, a refused target, a probe error): not "down".
        first = unanswered[0]
        retry = max((u.retry_after_s or 0 for u in result.urls), default=0)
        if retry:
            m["retryAfterSeconds"] = int(retry)
        reason = _no_answer_reason(first.failure)
        if first.failure == "RateLimited":
            msg = "rate limited (429); no answer this time"
        else:
            msg = f"{first.url}: {first.message}"
        return Assessment("Unknown", (), msg, reason, m, latency)
    return _judged(findings, m, f"{len(result.urls)} URL(s) answered as expected", latency)


def _assess_prometheus_check(
    spec: PrometheusCheck, result: ProbeResult, latency: float | None
) -> Assessment:
    if not result.series and spec.empty_result == "Unknown":
        msg = "the query returned no data"
        return Assessment("Unknown", (), msg, "NoData", {"series": []}, latency)
    findings, m = checks.assess_prometheus(spec, result)
    return _judged(findings, m, f"{len(result.series)} series within bands", latency)


def _assess_resources_check(spec: ResourcesCheck, result: ProbeResult) -> Assessment:
    """No latency: reading metrics is not the replicas' response time."""
    findings, m = checks.assess_resources(spec, result)
    if "cpuPercent" not in m and "memoryPercent" not in m:
        msg = f"{m['target']}: no replica has a usable basis"
        return Assessment("Unknown", (), msg, "NoMetrics", m, None)
    # No numbers here: a message that changes every round would be a status write
    # every round (the numbers are in measurements, written with significant changes).
    unit = "container" if spec.target_ref.is_compose else "pod"
    healthy = f"CPU and memory within bands of {m['basis']} ({m['replicas']} {unit}(s))"
    return _judged(findings, m, healthy, None)


def _assess_logs_check(check: Check, result: ProbeResult, prev: Mapping[str, Any]) -> Assessment:
    """A read that failed keeps the rules' state (counts, cursor): nothing is lost or
    counted twice when the source answers again. No latency: reading is not serving."""
    assert check.logs is not None
    if result.failure is not None:
        kept = {k: v for k, v in prev.items() if k in ("rules", "cursor", "seenAtCursor")}
        reason = result.reason or _no_answer_reason(result.failure)
        return Assessment("Unknown", (), result.message or reason, reason, kept, None)
    findings, m = checks.assess_logs(check.logs, result, prev)
    rules = len(m.get("rules") or {})
    return _judged(findings, m, f"no rule above its band ({rules} rule(s))", None)


def _cache_healthy(m: Mapping[str, Any]) -> str:
    note = m.get("hitRatioNote")
    return f"cache answering; hit ratio not judged ({note})" if note else "cache answering"


def assess(
    check: Check,
    result: ProbeResult,
    previous: Mapping[str, Any] | None,
    rule: SampleRule | None = None,
) -> Assessment:
    """Apply the check's bands to one probe result (``previous``: the check's last status;
    ``rule``: how ratios are judged, samples.SampleRule)."""
    prev = dict((previous or {}).get("measurements") or {})
    # Reading metrics is not a service's response time: keep it out of worstLatency.
    latency = None if check.resources is not None else result.latency_ms
    if check.logs is not None:
        return _assess_logs_check(check, result, prev)
    if result.failure in _NO_ANSWER:
        return _no_answer(result, latency)
    failure = _failure_finding(result)
    if failure is not None and not result.urls:
        return _down(failure, prev, latency)
    if check.http is not None:
        return _assess_http_check(check.http, result, latency)
    if check.postgres is not None:
        findings, m = checks.assess_postgres(check.postgres, result, prev)
        return _judged(findings, m, "database answering", latency)
    if check.memcached is not None:
        findings, m = checks.assess_memcached(check.memcached, result, prev, rule)
        return _judged(findings, m, _cache_healthy(m), latency)
    if check.prometheus is not None:
        return _assess_prometheus_check(check.prometheus, result, latency)
    if check.resources is not None:
        return _assess_resources_check(check.resources, result)
    assert check.rabbitmq is not None
    findings, m = checks.assess_rabbitmq(check.rabbitmq, result)
    return _judged(findings, m, "broker answering", latency)
