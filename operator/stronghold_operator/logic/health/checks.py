"""Per check type: one probe result -> findings and the measurements for status."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from stronghold_operator.logic.health import insights, logs
from stronghold_operator.logic.health.findings import (
    Finding,
    Level,
    band_lower,
    band_upper,
    latency_finding,
)
from stronghold_operator.logic.health.samples import Ratio, SampleRule, Window, ratio, window
from stronghold_operator.logic.scaling import utilisation
from stronghold_operator.models.health import (
    HttpCheck,
    LogsCheck,
    MemcachedCheck,
    PostgresCheck,
    PrometheusCheck,
    RabbitmqCheck,
    ResourcesCheck,
)
from stronghold_operator.probes.base import ProbeResult, UrlResult


def assess_http(spec: HttpCheck, result: ProbeResult) -> tuple[list[Finding], dict[str, Any]]:
    findings: list[Finding] = []
    urls: list[dict[str, Any]] = []
    doc = spec.health_document
    healthy_words = {w.lower() for w in doc.healthy_values} if doc else set()
    component_words = {w.lower() for w in doc.component_healthy_values} if doc else set()
    for u in result.urls:
        urls.append(url_status(u))
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
        findings += latency_finding(u.latency_ms, spec.latency, u.url)
    return findings, {"urls": urls}


def url_status(u: UrlResult) -> dict[str, Any]:
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


def _connections(spec: PostgresCheck, n: Mapping[str, Any], m: dict[str, Any]) -> list[Finding]:
    """Connections in use against max_connections; writes the percentage into ``m``."""
    if "connectionsPercent" not in n:
        return []
    pct = float(n["connectionsPercent"])
    m["connectionsPercent"] = round(pct, 1)
    level = band_upper(pct, spec.connections)
    if not level:
        return []
    code = "ConnectionsCritical" if level == "critical" else "ConnectionsWarning"
    return [Finding(code, level, f"connections {pct:.0f}% of max_connections")]


def _blocked_sessions(spec: PostgresCheck, result: ProbeResult, m: dict[str, Any]) -> list[Finding]:
    """Sessions waiting on a lock and who holds it; writes them into ``m``."""
    n = result.numbers
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
    if blocked <= spec.max_blocked_sessions:
        return []
    who = ", ".join(f"pid {b.pid} ({b.user})" for b in result.blockers[:3]) or "unknown"
    return [
        Finding("BlockedSessions", "critical", f"{blocked} blocked session(s), blocked by {who}")
    ]


def _long_running(spec: PostgresCheck, result: ProbeResult, m: dict[str, Any]) -> list[Finding]:
    """Queries active longer than ``longRunningAfter``; writes them into ``m``."""
    if result.long_queries or "longRunningQueries" in result.numbers:
        m["longRunningQueries"] = len(result.long_queries)
        m["longRunning"] = [
            {"pid": q.pid, "user": q.user, "seconds": round(q.seconds, 1)}
            for q in result.long_queries[:10]
        ]
    if not result.long_queries:
        return []
    minutes = spec.long_running_after.total_seconds() / 60
    return [
        Finding(
            "LongRunningQueries",
            "warning",
            f"{len(result.long_queries)} query(ies) active longer than {minutes:g} min",
        )
    ]


def _slow_statements(result: ProbeResult) -> dict[str, Any]:
    if result.slow_statements is None:
        return {"slowStatements": "unavailable"}
    # Utility statements are kept verbatim by pg_stat_statements (ALTER ROLE ... PASSWORD):
    # only query statements are shown, literals masked (logic/health/insights.py).
    shown = ((s, insights.statement_text(s.query, 160)) for s in result.slow_statements)
    return {
        "slowStatements": "available",
        "slowStatementsTop": [
            {
                "queryId": s.query_id,
                "meanMs": round(s.mean_ms, 1),
                "calls": s.calls,
                "query": text,
            }
            for s, text in shown
            if text is not None
        ],
    }


def assess_postgres(
    spec: PostgresCheck, result: ProbeResult, previous: Mapping[str, Any]
) -> tuple[list[Finding], dict[str, Any]]:
    n = result.numbers
    findings = latency_finding(result.latency_ms, spec.latency, "connect+query")
    m: dict[str, Any] = {}
    for key in ("connectionsUsed", "maxConnections", "dbSizeBytes"):
        if key in n:
            m[key] = int(n[key])
    findings += _connections(spec, n, m)
    before = previous.get("dbSizeBytes")
    if "dbSizeBytes" in n and isinstance(before, int | float):
        # Growth since the previous probe (negative after a VACUUM FULL or a drop).
        m["dbGrowthBytes"] = int(n["dbSizeBytes"]) - int(before)
    if result.sessions_by_state:
        m["sessionsByState"] = dict(result.sessions_by_state)
    findings += _blocked_sessions(spec, result, m)
    findings += _long_running(spec, result, m)
    m.update(_slow_statements(result))
    if spec.insights is not None and result.insights is not None:
        # Insights are reading material, never findings: they do not change the state.
        m["insights"] = insights.summarise(spec.insights, result.insights)
    return findings, m


_COUNTERS = ("getHits", "cmdGet", "evictionsTotal")
# Kept in the measurements as the next probe's baseline (samples.window).
BASELINE = (*_COUNTERS, "uptimeSeconds", "sampledAt")


def _hit_ratio(
    spec: MemcachedCheck,
    n: Mapping[str, Any],
    previous: Mapping[str, Any],
    rule: SampleRule,
    m: dict[str, Any],
) -> tuple[Ratio | None, Window | None]:
    """The hit ratio to judge, on the interval's gets (samples.py), and the interval's
    counter window; writes the ratios, the sample and why it is not judged into ``m``."""
    hits, gets = n.get("getHits"), n.get("cmdGet")
    if isinstance(hits, int | float) and isinstance(gets, int | float) and gets > 0:
        m["hitRatio"] = round(100.0 * hits / gets, 2)  # since start: the guide's formula
    minimum = spec.min_gets or rule.min_sample
    counters = [k for k in _COUNTERS if k in n]
    w = window(n, previous, counters, rule.max_age_s)
    r: Ratio | None = None
    if isinstance(w, Window) and "getHits" in w.deltas and "cmdGet" in w.deltas:
        d_hits, d_gets = w.deltas["getHits"], w.deltas["cmdGet"]
        if d_hits <= d_gets:
            r = ratio(d_hits, d_gets, minimum, "gets", " in the interval")
            if r.percent is not None:
                m["intervalHitRatio"] = r.percent
            m["intervalGets"] = r.sample
    elif rule.one_shot and w == "no baseline" and isinstance(gets, int | float):
        # One probe by design (stronghold check): since start, with the same minimum.
        r = ratio(float(hits or 0), float(gets), minimum, "gets", " since start")
    if r is None:
        why = w if isinstance(w, str) else "counters inconsistent"
        m["hitRatioJudged"] = False
        m["hitRatioNote"] = (
            "no baseline: this probe is the baseline, judged from the next"
            if why == "no baseline"
            else f"{why}: a new baseline, judged from the next probe"
        )
    else:
        m["hitRatioJudged"] = r.judged
        if not r.judged:
            m["hitRatioNote"] = r.note
    return r, w if isinstance(w, Window) else None


def assess_memcached(
    spec: MemcachedCheck,
    result: ProbeResult,
    previous: Mapping[str, Any],
    rule: SampleRule | None = None,
) -> tuple[list[Finding], dict[str, Any]]:
    n = result.numbers
    findings: list[Finding] = []
    m: dict[str, Any] = {}
    for key in (*BASELINE, "currConnections", "bytes", "limitMaxBytes"):
        if key in n:
            m[key] = int(n[key])
    r, w = _hit_ratio(spec, n, previous, rule or SampleRule(), m)
    if r is not None and r.judged and r.percent is not None:
        level = band_lower(r.percent, spec.hit_ratio)
        if level:
            bands = spec.hit_ratio
            below = bands.critical_below if level == "critical" else bands.warning_below
            findings.append(
                Finding(
                    "HitRatioLow",
                    level,
                    f"hit ratio {r.percent:.1f}% below {below:g}% ({r.sample} gets)",
                )
            )
    evicted = w.deltas.get("evictionsTotal") if w is not None else None
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


def _resource_values(
    spec: ResourcesCheck,
    result: ProbeResult,
    per: Sequence[tuple[str, float | None, float | None]],
) -> dict[str, tuple[float, str]]:
    """The CPU and memory percentages to judge, each with how it was aggregated."""
    replicas = result.replicas
    unit = "container" if spec.target_ref.is_compose else "pod"
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
    return values


def assess_resources(
    spec: ResourcesCheck, result: ProbeResult
) -> tuple[list[Finding], dict[str, Any]]:
    """Utilisation of the replicas' basis: requests (Kubernetes) or limits (Docker), the
    ScalingPolicy's basis; averaged as HPA does, or the busiest replica (``aggregate: max``)."""
    ref = spec.target_ref
    basis = "limits" if ref.is_compose else "requests"
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
    values = _resource_values(spec, result, per)
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


# The reader's own numbers a logs check shows beside the rules' state.
LOG_READ_NUMBERS = ("bytesRead", "linesRead", "linesDropped", "truncated")


def log_level(severity: str) -> Level:
    """P1/P2 rules make the check Critical, P3/P4 a Warning."""
    return "critical" if severity in ("P1", "P2") else "warning"


def _window_words(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"


def assess_logs(
    spec: LogsCheck, result: ProbeResult, prev: Mapping[str, Any]
) -> tuple[list[Finding], dict[str, Any]]:
    """Count the round's lines into the rules' windows (state from ``prev``, the check's
    last measurements) and raise a ``SecurityEvent`` per rule above its band."""
    rules = logs.compile_rules(spec.effective_rules())
    n = result.numbers
    limit = n.get("limitNs")
    st = logs.step(
        rules,
        logs.state_from(prev),
        result.lines,
        float(n.get("readAt", 0)),
        max_samples=spec.samples,
        limit_ns=int(limit) if limit is not None else None,
    )
    m = logs.to_measurements(st.state, st.counts)
    m["source"] = spec.describe()
    for k in LOG_READ_NUMBERS:
        if k in n:
            m[k] = int(n[k])
    if st.untimed:
        m["linesUntimed"] = st.untimed
    findings = []
    for r in rules:
        count = st.counts[r.name]
        if count <= r.above:
            continue
        samples = st.state.rules[r.name].samples
        example = f"; e.g. {samples[-1][:160]}" if samples else ""
        message = (
            f"{r.name}: {count} in {_window_words(r.window_s)} > {r.above} ({r.severity}){example}"
        )
        findings.append(Finding("SecurityEvent", log_level(r.severity), message, component=r.name))
    return findings, m
