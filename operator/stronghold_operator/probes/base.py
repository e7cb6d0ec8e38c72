"""One probe protocol and its result types: a failing service is a result, never an exception.

Probes measure; they do not judge. Bands, states and severities are applied by
``logic.health`` to the measurements here, so a probe result is plain data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar

from stronghold_operator.models.scaling import ReplicaUsage

# Why a probe got no usable answer. ``None`` means it got one (good or bad).
Failure = Literal["Unreachable", "Timeout", "RateLimited", "Refused", "Error"]

Number = int | float


@dataclass(frozen=True)
class Blocker:
    """A PostgreSQL session that blocks others (from pg_blocking_pids)."""

    pid: int
    user: str
    application: str
    blocked_pids: tuple[int, ...]


@dataclass(frozen=True)
class LongQuery:
    pid: int
    user: str
    seconds: float


@dataclass(frozen=True)
class SlowStatement:
    query_id: str
    mean_ms: float
    calls: int
    query: str  # normalised by pg_stat_statements (constants are $n), truncated


@dataclass(frozen=True)
class StatementStat:
    """One pg_stat_statements entry (this database, top-level statements)."""

    query_id: str
    calls: int
    total_ms: float
    mean_ms: float
    rows: int
    query: str  # as pg_stat_statements stored it (constants of DML are $n); redact before use


@dataclass(frozen=True)
class IndexStat:
    """An index never scanned since the statistics were reset (not unique, not a key)."""

    schema: str
    table: str
    index: str
    size_bytes: int


@dataclass(frozen=True)
class TableScans:
    schema: str
    table: str
    seq_scans: int
    idx_scans: int | None  # None: the table has no index
    seq_tuples_read: int
    size_bytes: int


@dataclass(frozen=True)
class GrowthValue:
    name: str
    value: float | None  # None: the query failed or did not return one number
    error: str = ""


# Why the statement lists are empty: the extension is not created in the database, created
# but not in shared_preload_libraries, or not readable by the probing role.
StatementsState = Literal[
    "Available",
    "PgStatStatementsMissing",
    "PgStatStatementsNotLoaded",
    "PgStatStatementsError",
    "Unread",  # the whole read failed (connection, timeout): the message says why
]


@dataclass(frozen=True)
class DatabaseInsights:
    """What one insights round read (bounded by the spec's ``limit`` per list)."""

    collected_at: float  # wall clock, seconds since the epoch
    statements_state: StatementsState
    statements_message: str = ""
    statements: tuple[StatementStat, ...] = ()
    unused_indexes: tuple[IndexStat, ...] = ()
    tables: tuple[TableScans, ...] = ()
    growth: tuple[GrowthValue, ...] = ()
    stats_reset: float | None = None  # when this database's statistics were last reset


@dataclass(frozen=True)
class QueueStats:
    name: str
    messages: int | None  # None: the queue does not exist
    consumers: int | None
    unacknowledged: int | None = None  # only the management API knows


@dataclass(frozen=True)
class UrlResult:
    """One URL of an HTTP check."""

    url: str
    status_code: int | None
    latency_ms: float | None
    failure: Failure | None = None
    message: str = ""
    # The JSON document's overall status and components (None: not JSON / not parsed).
    document_status: str | None = None
    components: Mapping[str, str | None] = field(default_factory=dict)
    retry_after_s: float | None = None


@dataclass(frozen=True)
class Series:
    """One series of a PromQL instant query."""

    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class ProbeResult:
    """What one probe of one check measured.

    ``failure`` set means no usable answer; the numbers then may be missing. ``numbers`` holds
    the scalar measurements by name (see docs/healthpolicy.md for the names per type).
    """

    latency_ms: float | None
    failure: Failure | None = None
    message: str = ""
    numbers: Mapping[str, Number] = field(default_factory=dict)
    sessions_by_state: Mapping[str, int] = field(default_factory=dict)
    blockers: tuple[Blocker, ...] = ()
    long_queries: tuple[LongQuery, ...] = ()
    slow_statements: tuple[SlowStatement, ...] | None = None  # None: pg_stat_statements absent
    insights: DatabaseInsights | None = None  # postgres checks with ``insights`` set
    queues: tuple[QueueStats, ...] = ()
    urls: tuple[UrlResult, ...] = ()
    series: tuple[Series, ...] = ()
    retry_after_s: float | None = None
    # Resources checks: usage and basis of each running replica (pod or container).
    replicas: tuple[ReplicaUsage, ...] = ()
    # Logs checks: the lines read this round, each "<RFC 3339 timestamp> <line>".
    lines: tuple[str, ...] = ()
    # A CamelCase reason for a result without a usable answer, when ``failure`` is too coarse
    # (e.g. ``MetricsUnavailable``, ``TargetNotFound``); the check is then Unknown.
    reason: str | None = None

    @classmethod
    def failed(cls, failure: Failure, message: str, latency_ms: float | None = None) -> ProbeResult:
        return cls(latency_ms=latency_ms, failure=failure, message=message)

    @classmethod
    def unavailable(cls, reason: str, message: str, latency_ms: float | None = None) -> ProbeResult:
        """Nothing to judge this time (no metrics, no target): Unknown with ``reason``."""
        return cls(latency_ms=latency_ms, failure="Error", message=message, reason=reason)


S_contra = TypeVar("S_contra", contravariant=True)


class Probe(Protocol[S_contra]):
    """Measure one check's target once. Must not raise for a failing target.

    ``secrets`` maps a secret role (``password``, ``url``, ``management-password``) to its
    value; a probe never logs or returns them.
    """

    async def probe(
        self, spec: S_contra, *, timeout_s: float, secrets: Mapping[str, str]
    ) -> ProbeResult: ...
