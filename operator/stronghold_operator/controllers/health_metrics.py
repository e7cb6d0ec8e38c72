"""HealthPolicy series on /metrics, rendered when Prometheus scrapes, from each policy's last round.

prometheus-client's labelled metrics keep a child object per label set (a Histogram child is
fourteen values, each with its own lock): a thousand policies of four checks made tens of
thousands of them, a large share of the operator's memory in a tracemalloc profile. Here a
policy keeps a few numbers per check, and the text is written at scrape time straight in
the exposition format (:func:`stronghold_operator.metrics.text_source`): built as
prometheus-client families, 10,000 policies' 190,000 samples took 1.7 s of CPU under the
GIL and 94 MB of short-lived objects per scrape; written a family and a thousand policies
at a time, 0.4 s and 3 MB. A policy that stops is no longer listed, so its series
disappear without bookkeeping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from prometheus_client.utils import floatToGoString

from stronghold_operator.logic.health.insights import InsightSeries
from stronghold_operator.logic.health.insights import series as insight_series
from stronghold_operator.models.health import SEVERITIES, Check
from stronghold_operator.probes.base import ProbeResult

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


# (name, type, help) of every family, in the order /metrics lists them.
_DURATION = "stronghold_health_probe_duration_seconds"
_SUCCESS = "stronghold_health_probe_success"
_SEVERITY = "stronghold_health_incident_severity"
_DEPTH = "stronghold_health_queue_depth"
_UTILISATION = "stronghold_health_resource_utilisation_percent"
# Per-check gauges present when the last round measured them: (CheckSeries attribute, name).
# The raw connection counts and the size are history for capacity planning (docs/capacity.md).
_OPTIONAL = (
    ("hit_ratio", "stronghold_health_cache_hit_ratio_percent"),
    ("connections", "stronghold_health_db_connections_percent"),
    ("connections_used", "stronghold_health_db_connections_used"),
    ("max_connections", "stronghold_health_db_max_connections"),
    ("db_size", "stronghold_health_db_size_bytes"),
)
_PG = "stronghold_postgres_"
FAMILIES: tuple[tuple[str, str, str], ...] = (
    (_DURATION, "summary", "Duration of the probes of one HealthPolicy check (count and sum)"),
    (
        _SUCCESS,
        "gauge",
        "1 when the last probe of a check was Healthy, 0 when Warning/Critical, -1 when Unknown",
    ),
    (_SEVERITY, "gauge", "Severity of a HealthPolicy's open incident: 1..4 for P1..P4, 0 for none"),
    (_OPTIONAL[0][1], "gauge", "Memcached hit ratio (since the previous probe when known)"),
    (_OPTIONAL[1][1], "gauge", "PostgreSQL connections used as percent of max_connections"),
    (_OPTIONAL[2][1], "gauge", "PostgreSQL connections in use (server-wide)"),
    (_OPTIONAL[3][1], "gauge", "PostgreSQL max_connections"),
    (_OPTIONAL[4][1], "gauge", "Size of the checked PostgreSQL database (pg_database_size)"),
    (_DEPTH, "gauge", "RabbitMQ ready messages per queue"),
    (
        _UTILISATION,
        "gauge",
        "Workload CPU/memory utilisation of a resources check (of requests, or of Docker limits)",
    ),
    (
        _PG + "statements_available",
        "gauge",
        "1 when pg_stat_statements answered the last insights read, 0 when not",
    ),
    (
        _PG + "growth_value",
        "gauge",
        "The number a growth query of a postgres check's insights returned",
    ),
    (
        _PG + "growth_success",
        "gauge",
        "1 when the growth query answered with one number, 0 when it failed",
    ),
    (
        _PG + "statement_mean_seconds",
        "gauge",
        "Mean execution time of a statement (pg_stat_statements, top by any list)",
    ),
    (
        _PG + "statement_calls",
        "gauge",
        "Calls of a statement since the statistics were reset (pg_stat_statements)",
    ),
    (_PG + "statement_rows_per_call", "gauge", "Rows per call of a statement (pg_stat_statements)"),
    (
        _PG + "unused_index_bytes",
        "gauge",
        "Size of an index never scanned since the statistics were reset (not unique)",
    ),
    (
        _PG + "table_seq_scan_ratio",
        "gauge",
        "Sequential scans per index scan of a seq-scan-heavy table (no index scan: 1)",
    ),
)


# Numbers as prometheus-client writes them (Go's formatting: 1e+06, +Inf, NaN).
_num: Callable[[float], str] = floatToGoString


def _esc(value: str) -> str:
    """A label value as the exposition format quotes it (names are DNS labels: the fast path)."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


class HealthSeries:
    """Every running policy's series; :meth:`render` is the text /metrics serves."""

    families = tuple(name for name, _, _ in FAMILIES)

    def __init__(self) -> None:
        self.policies: dict[str, PolicySeries] = {}  # by uid

    def series(self, uid: str, namespace: str, policy: str) -> PolicySeries:
        found = self.policies.get(uid)
        if found is None:
            found = self.policies[uid] = PolicySeries(namespace, policy)
        return found

    def forget(self, uid: str) -> None:
        self.policies.pop(uid, None)

    def render(self) -> Iterator[str]:
        """Every family in the Prometheus text format (0.0.4), samples grouped by family, in
        pieces of ``PAGE`` policies: a scrape holds one piece at a time (built whole, the text
        of 10,000 policies was 45 MB of short-lived strings, the operator's RSS peak)."""
        # The event loop changes these while the metrics server's thread reads them: list()
        # copies a dict without letting go of the GIL, so each copy is consistent.
        policies = list(self.policies.values())
        for name, kind, help_text in FAMILIES:
            write = _WRITERS[name]
            out = [f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"]
            for n, p in enumerate(policies, 1):
                write(p, out)
                if n % PAGE == 0:
                    yield "".join(out)
                    out = []
            yield "".join(out)


# --- one family's samples of one policy -------------------------------------------------------

PAGE = 1000  # policies per piece of a family's text
Writer = Callable[[PolicySeries, list[str]], None]


def _checks(p: PolicySeries) -> Iterator[tuple[str, CheckSeries]]:
    """(labels, series) of each check: namespace, policy and check quoted."""
    pl = f'namespace="{_esc(p.namespace)}",policy="{_esc(p.policy)}"'
    for name, c in list(p.checks.items()):
        yield f'{pl},check="{_esc(name)}"', c


def _severity(p: PolicySeries, out: list[str]) -> None:
    out.append(
        f'{_SEVERITY}{{namespace="{_esc(p.namespace)}",policy="{_esc(p.policy)}"}}'
        f" {_num(p.severity)}\n"
    )


def _duration(p: PolicySeries, out: list[str]) -> None:
    for cl, c in _checks(p):
        out.append(
            f'{_DURATION}_count{{{cl},type="{c.type}"}} {_num(c.count)}\n'
            f'{_DURATION}_sum{{{cl},type="{c.type}"}} {_num(c.seconds)}\n'
        )


def _success(p: PolicySeries, out: list[str]) -> None:
    for cl, c in _checks(p):
        out.append(f"{_SUCCESS}{{{cl}}} {_num(c.success)}\n")


def _optional(attr: str, family: str) -> Writer:
    def write(p: PolicySeries, out: list[str]) -> None:
        for cl, c in _checks(p):
            value = getattr(c, attr)
            if value is not None:
                out.append(f"{family}{{{cl}}} {_num(value)}\n")

    return write


def _depth(p: PolicySeries, out: list[str]) -> None:
    for cl, c in _checks(p):
        for queue, messages in list(c.queues.items()):
            out.append(f'{_DEPTH}{{{cl},queue="{_esc(queue)}"}} {_num(messages)}\n')


def _utilisation(p: PolicySeries, out: list[str]) -> None:
    for cl, c in _checks(p):
        for resource, value in list(c.resources.items()):
            out.append(f'{_UTILISATION}{{{cl},resource="{resource}"}} {_num(value)}\n')


def _insight(family: str) -> Writer:
    """The ``stronghold_postgres_*`` family ``family`` of each check with insights."""

    def write(p: PolicySeries, out: list[str]) -> None:
        for cl, c in _checks(p):
            if c.insights is not None:
                for f, labels, value in _insight_samples(c.insights):
                    if f == family:
                        out.append(f"{f}{{{cl}{labels}}} {_num(value)}\n")

    return write


def _insight_samples(s: InsightSeries) -> Iterator[tuple[str, str, float]]:
    """(family, labels after the check's, value) of one check's insights (docs/healthpolicy.md)."""
    yield _PG + "statements_available", "", s.available
    for name, value in s.growth:
        yield _PG + "growth_success", f',name="{_esc(name)}"', 0 if value is None else 1
        if value is not None:
            yield _PG + "growth_value", f',name="{_esc(name)}"', value
    for st in s.statements:
        q = f',queryid="{_esc(st.query_id)}"'
        yield _PG + "statement_mean_seconds", q, st.mean_ms / 1000.0
        yield _PG + "statement_calls", q, st.calls
        yield _PG + "statement_rows_per_call", q, st.rows / st.calls if st.calls else 0
    for schema, table, index, size in s.unused_indexes:
        where = f',schema="{_esc(schema)}",table="{_esc(table)}",index="{_esc(index)}"'
        yield _PG + "unused_index_bytes", where, size
    for schema, table, ratio in s.seq_scan_ratios:
        where = f',schema="{_esc(schema)}",table="{_esc(table)}"'
        yield _PG + "table_seq_scan_ratio", where, ratio


_WRITERS: dict[str, Writer] = {
    _DURATION: _duration,
    _SUCCESS: _success,
    _SEVERITY: _severity,
    **{family: _optional(attr, family) for attr, family in _OPTIONAL},
    _DEPTH: _depth,
    _UTILISATION: _utilisation,
    **{name: _insight(name) for name, _, _ in FAMILIES if name.startswith(_PG)},
}
