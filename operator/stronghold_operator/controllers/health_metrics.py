"""HealthPolicy series on /metrics, built when Prometheus scrapes, from each policy's last round.

prometheus-client's labelled metrics keep a child object per label set (a Histogram child is
fourteen values, each with its own lock): a thousand policies of four checks made tens of
thousands of them, a large share of the operator's memory in a tracemalloc profile. Here a
policy keeps a few numbers per check, and the families are assembled at scrape time (a
custom collector, as the client library recommends for exporters). A policy that stops is
no longer listed, so its series disappear without bookkeeping.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

from stronghold_operator.logic.health.insights import InsightSeries
from stronghold_operator.logic.health.insights import series as insight_series
from stronghold_operator.models.health import SEVERITIES, Check
from stronghold_operator.probes.base import ProbeResult

_LABELS = ["namespace", "policy", "check"]
NONE: Mapping[str, float] = MappingProxyType({})  # 8,000 empty dicts at 2,000 policies


@dataclass(slots=True)
class CheckSeries:
    type: str
    count: int = 0  # probes answered with a latency
    seconds: float = 0.0  # their total duration
    success: int = -1  # 1 Healthy, 0 Warning/Critical, -1 Unknown
    hit_ratio: float | None = None
    connections: float | None = None
    connections_used: float | None = None
    max_connections: float | None = None
    db_size: float | None = None
    # The last round's (usually none: then the one shared empty mapping).
    resources: Mapping[str, float] = field(default_factory=lambda: NONE)
    queues: Mapping[str, float] = field(default_factory=lambda: NONE)
    insights: InsightSeries | None = None  # postgres checks with insights: the last read


@dataclass(slots=True)
class PolicySeries:
    namespace: str
    policy: str
    severity: int = 0  # 1..4 for P1..P4, 0 for none
    checks: dict[str, CheckSeries] = field(default_factory=dict)

    def record(
        self,
        checks: Sequence[Check],
        results: Mapping[str, ProbeResult],
        entries: Sequence[Mapping[str, Any]],
        severity: str,
    ) -> None:
        """One round: its probe durations, states and key measurements (``entries`` are
        the status's ``checks``, in the order of ``checks``)."""
        self.severity = SEVERITIES.index(severity) + 1 if severity in SEVERITIES else 0
        before, self.checks = self.checks, {}
        for check, entry in zip(checks, entries, strict=True):
            old = before.get(check.name)
            s = old if old is not None and old.type == check.type else CheckSeries(check.type)
            self.checks[check.name] = s
            result = results.get(check.name)
            if result is not None and result.latency_ms is not None:
                s.count += 1
                s.seconds += result.latency_ms / 1000.0
            observed = entry["observedState"]
            s.success = 1 if observed == "Healthy" else -1 if observed == "Unknown" else 0
            m = entry["measurements"]
            s.hit_ratio = m.get("intervalHitRatio", m.get("hitRatio"))
            s.connections = m.get("connectionsPercent")
            s.connections_used = m.get("connectionsUsed")
            s.max_connections = m.get("maxConnections")
            s.db_size = m.get("dbSizeBytes")
            s.resources = {r: m[k] for r in ("cpu", "memory") if (k := f"{r}Percent") in m} or NONE
            s.queues = {
                q["name"]: q["messages"] for q in m.get("queues", ()) if "messages" in q
            } or NONE
            spec = check.postgres.insights if check.postgres is not None else None
            if spec is None:
                s.insights = None
            elif result is not None and result.insights is not None:
                s.insights = insight_series(spec, result.insights)


# Per-check gauges present when the last round measured them: (CheckSeries attribute, name, help).
# The raw connection counts and the size are history for capacity planning (docs/capacity.md).
_OPTIONAL_GAUGES = (
    (
        "hit_ratio",
        "stronghold_health_cache_hit_ratio_percent",
        "Memcached hit ratio (since the previous probe when known)",
    ),
    (
        "connections",
        "stronghold_health_db_connections_percent",
        "PostgreSQL connections used as percent of max_connections",
    ),
    (
        "connections_used",
        "stronghold_health_db_connections_used",
        "PostgreSQL connections in use (server-wide)",
    ),
    ("max_connections", "stronghold_health_db_max_connections", "PostgreSQL max_connections"),
    (
        "db_size",
        "stronghold_health_db_size_bytes",
        "Size of the checked PostgreSQL database (pg_database_size)",
    ),
)


class HealthCollector(Collector):
    """Every running policy's series; registered once on the operator's registry."""

    def __init__(self) -> None:
        self.policies: dict[str, PolicySeries] = {}  # by uid

    def series(self, uid: str, namespace: str, policy: str) -> PolicySeries:
        found = self.policies.get(uid)
        if found is None:
            found = self.policies[uid] = PolicySeries(namespace, policy)
        return found

    def forget(self, uid: str) -> None:
        self.policies.pop(uid, None)

    def describe(self) -> list[Metric]:
        return []  # the families are only known at scrape time

    def collect(self) -> Iterator[Metric]:
        duration = SummaryMetricFamily(
            "stronghold_health_probe_duration_seconds",
            "Duration of the probes of one HealthPolicy check (count and sum)",
            labels=[*_LABELS, "type"],
        )
        success = GaugeMetricFamily(
            "stronghold_health_probe_success",
            "1 when the last probe of a check was Healthy, 0 when Warning/Critical,"
            " -1 when Unknown",
            labels=_LABELS,
        )
        severity = GaugeMetricFamily(
            "stronghold_health_incident_severity",
            "Severity of a HealthPolicy's open incident: 1..4 for P1..P4, 0 for none",
            labels=["namespace", "policy"],
        )
        optional = {
            attr: GaugeMetricFamily(name, help_text, labels=_LABELS)
            for attr, name, help_text in _OPTIONAL_GAUGES
        }
        depth = GaugeMetricFamily(
            "stronghold_health_queue_depth",
            "RabbitMQ ready messages per queue",
            labels=[*_LABELS, "queue"],
        )
        utilisation = GaugeMetricFamily(
            "stronghold_health_resource_utilisation_percent",
            "Workload CPU/memory utilisation of a resources check (of requests, or of Docker"
            " limits)",
            labels=[*_LABELS, "resource"],
        )
        pg = _PostgresFamilies()
        # The event loop changes these while the metrics server's thread reads them: list()
        # copies a dict without letting go of the GIL, so each copy is consistent.
        for p in list(self.policies.values()):
            severity.add_metric([p.namespace, p.policy], p.severity)
            for name, c in list(p.checks.items()):
                labels = [p.namespace, p.policy, name]
                duration.add_metric([*labels, c.type], c.count, c.seconds)
                success.add_metric(labels, c.success)
                for attr, family in optional.items():
                    value = getattr(c, attr)
                    if value is not None:
                        family.add_metric(labels, value)
                for resource, value in list(c.resources.items()):
                    utilisation.add_metric([*labels, resource], value)
                for queue, messages in list(c.queues.items()):
                    depth.add_metric([*labels, queue], messages)
                if c.insights is not None:
                    pg.add(labels, c.insights)
        yield from (duration, success, severity, *optional.values(), depth, utilisation)
        yield from pg.families()


class _PostgresFamilies:
    """The ``stronghold_postgres_*`` insights families (docs/healthpolicy.md)."""

    def __init__(self) -> None:
        self.available = GaugeMetricFamily(
            "stronghold_postgres_statements_available",
            "1 when pg_stat_statements answered the last insights read, 0 when not",
            labels=_LABELS,
        )
        self.growth = GaugeMetricFamily(
            "stronghold_postgres_growth_value",
            "The number a growth query of a postgres check's insights returned",
            labels=[*_LABELS, "name"],
        )
        self.growth_ok = GaugeMetricFamily(
            "stronghold_postgres_growth_success",
            "1 when the growth query answered with one number, 0 when it failed",
            labels=[*_LABELS, "name"],
        )
        q = [*_LABELS, "queryid"]
        self.mean = GaugeMetricFamily(
            "stronghold_postgres_statement_mean_seconds",
            "Mean execution time of a statement (pg_stat_statements, top by any list)",
            labels=q,
        )
        self.calls = GaugeMetricFamily(
            "stronghold_postgres_statement_calls",
            "Calls of a statement since the statistics were reset (pg_stat_statements)",
            labels=q,
        )
        self.rows = GaugeMetricFamily(
            "stronghold_postgres_statement_rows_per_call",
            "Rows per call of a statement (pg_stat_statements)",
            labels=q,
        )
        self.unused = GaugeMetricFamily(
            "stronghold_postgres_unused_index_bytes",
            "Size of an index never scanned since the statistics were reset (not unique)",
            labels=[*_LABELS, "schema", "table", "index"],
        )
        self.seq = GaugeMetricFamily(
            "stronghold_postgres_table_seq_scan_ratio",
            "Sequential scans per index scan of a seq-scan-heavy table (no index scan: 1)",
            labels=[*_LABELS, "schema", "table"],
        )

    def add(self, labels: list[str], s: InsightSeries) -> None:
        self.available.add_metric(labels, s.available)
        for name, value in s.growth:
            self.growth_ok.add_metric([*labels, name], 0 if value is None else 1)
            if value is not None:
                self.growth.add_metric([*labels, name], value)
        for st in s.statements:
            self.mean.add_metric([*labels, st.query_id], st.mean_ms / 1000.0)
            self.calls.add_metric([*labels, st.query_id], st.calls)
            self.rows.add_metric([*labels, st.query_id], st.rows / st.calls if st.calls else 0)
        for schema, table, index, size in s.unused_indexes:
            self.unused.add_metric([*labels, schema, table, index], size)
        for schema, table, ratio in s.seq_scan_ratios:
            self.seq.add_metric([*labels, schema, table], ratio)

    def families(self) -> tuple[Metric, ...]:
        return (
            self.available,
            self.growth,
            self.growth_ok,
            self.mean,
            self.calls,
            self.rows,
            self.unused,
            self.seq,
        )
