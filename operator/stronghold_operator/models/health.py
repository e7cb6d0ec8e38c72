"""HealthPolicy spec: checks, bands, incident rules, alerting (parsed with ``models.parse``).

Defaults come from the operations guide: response time 100/200/500 ms, database connections
70/80/95 %, CPU 70/80/90 %, memory 80/85/95 %, cache hit ratio above 80 %, long-running
queries after 5 minutes, slow statements above 100 ms mean (top 10), escalation after
30 minutes and after 1 hour.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from stronghold_operator.models.base import Duration, SpecModel, check_port, shared, within
from stronghold_operator.models.common import SecretKeySelector
from stronghold_operator.models.outbound import host_refusal
from stronghold_operator.models.scaling import TargetRef
from stronghold_operator.models.status import Condition, StatusModel, Timestamp

Severity = Literal["P1", "P2", "P3", "P4"]
CheckType = Literal["http", "postgres", "memcached", "rabbitmq", "prometheus", "resources", "logs"]
CheckState = Literal["Healthy", "Warning", "Critical", "Unknown"]

SEVERITIES: tuple[Severity, ...] = ("P1", "P2", "P3", "P4")

# Bounds of the durations (docs/healthpolicy.md); every other duration is at most 8760h.
MIN_INTERVAL = timedelta(seconds=1)
MAX_INTERVAL = timedelta(hours=24)
MIN_WEBHOOK_TIMEOUT = timedelta(milliseconds=100)
MAX_WEBHOOK_TIMEOUT = timedelta(minutes=5)

# Set by a MaintenanceWindow while it is in progress; incidents are then expected.

# What a probe can find wrong; incident rules map these to severities.
FindingCode = Literal[
    "Unreachable",  # connection refused, DNS failure, authentication failure
    "Timeout",  # no answer within the check's timeout
    "UnexpectedStatus",  # HTTP status not in expectedStatus
    "Unhealthy",  # the health document's overall status is not a healthy word
    "ComponentDown",  # a component in the health document is not healthy
    "LatencyWarning",
    "LatencyCritical",
    "ConnectionsWarning",
    "ConnectionsCritical",
    "BlockedSessions",
    "LongRunningQueries",
    "SlowStatements",
    "HitRatioLow",
    "Evictions",
    "MemoryHigh",
    "QueueDepthHigh",
    "ConsumersLow",
    "QueueMissing",
    "Refused",  # the target is a forbidden address (link-local, cloud metadata)
    "MetricWarning",  # a PromQL result in its warning band
    "MetricCritical",  # a PromQL result in its critical band
    "NoData",  # a PromQL query returned nothing and emptyResult says that is bad
    "CpuWarning",  # a workload's CPU utilisation in its warning band
    "CpuCritical",
    "MemoryWarning",  # a workload's memory utilisation in its warning band
    "MemoryCritical",
    "SecurityEvent",  # a logs check's rule counted more than its band allows (component: rule)
]
FINDING_CODES: tuple[str, ...] = FindingCode.__args__  # type: ignore[attr-defined]


def forbidden_host(host: str) -> str | None:
    """Why ``host`` must never be contacted, or None (the always-refused ranges of
    :mod:`~stronghold_operator.models.outbound`; loopback/private are judged when sending)."""
    return host_refusal(host)


# Request headers a spec may not set: credentials (a spec is clear text), cloud metadata
# request markers, and hop-by-hop/framing headers the client owns.
FORBIDDEN_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "host",
        "metadata",
        "metadata-flavor",
        "x-google-metadata-request",
        "x-identity-header",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "te",
        "trailer",
        "upgrade",
        "expect",
    }
)
FORBIDDEN_HEADER_PREFIXES = ("proxy-", "x-aws-ec2-metadata-token", "sec-")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$")
# A word a health document may report: also what status may show of it.
HEALTH_WORD = r"^[A-Za-z0-9._-]{1,64}$"


class LatencyBands(SpecModel):
    """Response-time bands: above ``warning`` is Warning, above ``critical`` is Critical."""

    target: Duration = timedelta(milliseconds=100)
    warning: Duration = timedelta(milliseconds=200)
    critical: Duration = timedelta(milliseconds=500)

    @model_validator(mode="after")
    def _ordered(self) -> LatencyBands:
        if not self.target <= self.warning <= self.critical:
            raise ValueError("bands must satisfy target <= warning <= critical")
        return self


class UpperBands(SpecModel):
    """Higher is worse: ``value >= warning`` is Warning, ``value >= critical`` is Critical."""

    target: float | None = Field(default=None, ge=0)
    warning: float = Field(ge=0)
    critical: float = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> UpperBands:
        if self.target is not None and self.target > self.warning:
            raise ValueError("bands must satisfy target <= warning")
        if self.warning > self.critical:
            raise ValueError("bands must satisfy warning <= critical")
        return self


class LowerBands(SpecModel):
    """Lower is worse: below ``warningBelow`` is Warning, below ``criticalBelow`` Critical."""

    warning_below: float = Field(alias="warningBelow", ge=0)
    critical_below: float = Field(alias="criticalBelow", ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> LowerBands:
        if self.critical_below > self.warning_below:
            raise ValueError("bands must satisfy criticalBelow <= warningBelow")
        return self


class Component(SpecModel):
    """One component of a JSON health document and the check it stands for."""

    name: str = Field(min_length=1, max_length=63)
    path: str = Field(min_length=1, max_length=253)
    check: str | None = Field(default=None, max_length=63)


_GUIDE_COMPONENTS = (
    Component(name="database", path="database"),
    Component(name="cache", path="cache"),
    Component(name="queue", path="queue"),
)


def _guide_components() -> list[Component]:
    return list(_GUIDE_COMPONENTS)  # a new list of the shared (frozen) components


class HealthDocument(SpecModel):
    """Where the states live in a JSON health document; the guide's shape by default."""

    status_path: str = Field(default="status", alias="statusPath", max_length=253)
    healthy_values: list[str] = Field(
        default_factory=lambda: ["healthy", "ok", "up", "pass", "passed", "green"],
        alias="healthyValues",
        min_length=1,
    )
    components: list[Component] = Field(default_factory=_guide_components)
    component_healthy_values: list[str] = Field(
        default_factory=lambda: ["connected", "healthy", "ok", "up", "pass", "available"],
        alias="componentHealthyValues",
        min_length=1,
    )

    @field_validator("healthy_values", "component_healthy_values")
    @classmethod
    def _words(cls, value: list[str]) -> list[str]:
        # Status shows a fetched value only when it is one of these: they must be safe words.
        for word in value:
            if not re.match(HEALTH_WORD, word):
                raise ValueError(f"{word!r}: 1-64 characters of A-Z a-z 0-9 . _ -")
        return value


def _check_url(url: str) -> str:
    check_port(url)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{url!r}: scheme must be http or https")
    if not parts.hostname:
        raise ValueError(f"{url!r}: no host")

    if parts.username or parts.password:
        raise ValueError(f"{url!r}: credentials in a URL are not allowed; use headers")
    why = forbidden_host(parts.hostname)
    if why:
        raise ValueError(f"{url!r}: {why}")
    return url


class HttpCheck(SpecModel):
    """Probe one or more URLs; optionally parse a JSON health document."""

    url: str | None = Field(default=None, max_length=2048)
    urls: list[str] = Field(default_factory=list, max_length=20)
    method: Literal["GET", "HEAD", "POST"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    expected_status: list[int] = Field(default_factory=lambda: [200], alias="expectedStatus")
    latency: LatencyBands = Field(default_factory=shared(LatencyBands()))
    health_document: HealthDocument | None = Field(default=None, alias="healthDocument")
    follow_redirects: bool = Field(default=False, alias="followRedirects")

    @field_validator("url", "urls")
    @classmethod
    def _ports(cls, value: str | list[str] | None) -> str | list[str] | None:
        # Checked per field so the message names url/urls, not just the check.
        for u in [value] if isinstance(value, str) else value or []:
            check_port(u)
        return value

    @field_validator("expected_status")
    @classmethod
    def _codes(cls, value: list[int]) -> list[int]:
        if not value or any(not 100 <= c <= 599 for c in value):
            raise ValueError("status codes must be between 100 and 599")
        return value

    @field_validator("headers")
    @classmethod
    def _safe_headers(cls, value: dict[str, str]) -> dict[str, str]:
        # Headers live in the spec in clear text (no credentials), and a probe must not be
        # able to pass for a cloud metadata client or take over the request's framing.
        for name, text in value.items():
            low = name.lower()
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if low in ("authorization", "proxy-authorization", "cookie"):
                raise ValueError(f"header {name!r} would put a credential in the spec")
            if low in FORBIDDEN_HEADERS or low.startswith(FORBIDDEN_HEADER_PREFIXES):
                raise ValueError(f"header {name!r} may not be set by a spec")
            if len(text) > 1024 or any(c in text for c in "\r\n\0"):
                raise ValueError(f"header {name!r}: the value must be one line of <= 1024 chars")
        return value

    @model_validator(mode="after")
    def _targets(self) -> HttpCheck:
        if self.url is None and not self.urls:
            raise ValueError("set url or urls")
        for u in self.targets:
            _check_url(u)
        return self

    @property
    def targets(self) -> list[str]:
        return ([self.url] if self.url else []) + list(self.urls)


class GrowthQuery(SpecModel):
    """A read-only SQL returning one number (e.g. new users in the last day), exported as
    ``stronghold_postgres_growth_value{name=...}``."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z][a-z0-9_]*$")
    query: str = Field(min_length=1, max_length=4000)
    timeout: Annotated[Duration, within(timedelta(milliseconds=100), timedelta(minutes=5))] = Field(
        default=timedelta(seconds=5)
    )

    @field_validator("query")
    @classmethod
    def _one_statement(cls, value: str) -> str:
        # One statement: a second one could end the read-only transaction (COMMIT; ...).
        if ";" in value.strip().rstrip(";"):
            raise ValueError("one statement only (no ';' inside the query)")
        return value.strip().rstrip(";")


class SeqScanRule(SpecModel):
    """Tables whose sequential scans are far above their index scans."""

    min_ratio: float = Field(default=10.0, alias="minRatio", gt=0, le=1e9)
    min_seq_scans: int = Field(default=100, alias="minSeqScans", ge=0)
    # Small tables are read sequentially by design (the planner prefers it): not a finding.
    min_table_bytes: int = Field(default=8 * 1024 * 1024, alias="minTableBytes", ge=0)


class PostgresInsights(SpecModel):
    """Opt-in database insights: pg_stat_statements tops, unused indexes, seq-scan-heavy
    tables and growth queries, gathered every ``interval`` (heavier than the probe)."""

    interval: Annotated[Duration, within(timedelta(seconds=10), MAX_INTERVAL)] = Field(
        default=timedelta(minutes=5)
    )
    top: int = Field(default=5, ge=1, le=20)  # entries per list in status
    limit: int = Field(default=50, ge=1, le=200)  # entries per list on /metrics
    statement_chars: int = Field(default=120, alias="statementChars", ge=20, le=1000)
    min_rows_per_call: float = Field(default=1000, alias="minRowsPerCall", ge=0)
    unused_index_min_bytes: int = Field(default=0, alias="unusedIndexMinBytes", ge=0)
    seq_scans: SeqScanRule = Field(default_factory=shared(SeqScanRule()), alias="seqScans")
    growth: list[GrowthQuery] = Field(default_factory=list, max_length=10)

    @field_validator("growth")
    @classmethod
    def _unique_names(cls, value: list[GrowthQuery]) -> list[GrowthQuery]:
        names = [g.name for g in value]
        if len(set(names)) != len(names):
            raise ValueError("growth query names must be unique")
        return value


class PostgresCheck(SpecModel):
    """A PostgreSQL server: latency, connections, sessions, locks, slow statements, size."""

    host: str = Field(min_length=1, max_length=253)
    port: int = Field(default=5432, ge=1, le=65535)
    database: str = Field(default="postgres", min_length=1, max_length=63)
    user: str = Field(default="postgres", min_length=1, max_length=63)
    password: SecretKeySelector | None = None
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    latency: LatencyBands = Field(default_factory=shared(LatencyBands()))
    connections: UpperBands = Field(
        default_factory=shared(UpperBands(target=70, warning=80, critical=95))
    )
    max_blocked_sessions: int = Field(default=0, alias="maxBlockedSessions", ge=0, le=1_000_000)
    long_running_after: Duration = Field(default=timedelta(minutes=5), alias="longRunningAfter")
    slow_statement_mean: Duration = Field(
        default=timedelta(milliseconds=100), alias="slowStatementMean"
    )
    slow_statement_top: int = Field(default=10, alias="slowStatementTop", ge=0, le=100)
    blocking_check_interval: Annotated[Duration, within(MIN_INTERVAL, MAX_INTERVAL)] = Field(
        default=timedelta(seconds=60), alias="blockingCheckInterval"
    )
    insights: PostgresInsights | None = None

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        why = forbidden_host(value)
        if why:
            raise ValueError(why)
        return value

    def connect_kwargs(self, password: str, timeout_s: float, application: str) -> dict[str, Any]:
        """psycopg's connection arguments for this check (the probe's and remediation's)."""
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "dbname": self.database,
            "user": self.user,
            "sslmode": self.sslmode,
            "application_name": application,
            "connect_timeout": max(2, int(timeout_s)),
            "autocommit": True,
            # The server gives up on our queries too, if ever they hang.
            "options": f"-c statement_timeout={int(timeout_s * 1000)}",
        }
        if password:
            kwargs["password"] = password
        return kwargs


class MemcachedCheck(SpecModel):
    """A Memcached server: hit ratio, evictions per interval, connections, memory."""

    address: str = Field(min_length=3, max_length=260, pattern=r"^[^\s:]+:[0-9]{1,5}$")
    hit_ratio: LowerBands = Field(
        default_factory=shared(LowerBands(warning_below=80, critical_below=50)), alias="hitRatio"
    )
    evictions: UpperBands = Field(
        default_factory=shared(UpperBands(warning=100, critical=1000)),
    )
    memory: UpperBands | None = None
    # Fewer gets in the interval than this and the hit ratio is not judged (None: the
    # policy's minSample).
    min_gets: int | None = Field(default=None, alias="minGets", ge=1, le=1_000_000_000)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not 1 <= int(port) <= 65535:
            raise ValueError("port must be between 1 and 65535")
        why = forbidden_host(host)
        if why:
            raise ValueError(why)
        return value

    @property
    def host(self) -> str:
        return self.address.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])


_QUEUE_DEPTH = UpperBands(warning=1000, critical=10000)


class QueueRule(SpecModel):
    """One queue and its bands."""

    name: str = Field(min_length=1, max_length=255)
    depth: UpperBands = Field(default_factory=shared(_QUEUE_DEPTH))
    min_consumers: int = Field(default=0, alias="minConsumers", ge=0, le=1_000_000)


class Management(SpecModel):
    """RabbitMQ management API (optional): every queue with unacknowledged counts."""

    url: str = Field(min_length=1, max_length=2048)
    username: str = Field(default="guest", min_length=1, max_length=255)
    password: SecretKeySelector
    depth: UpperBands = Field(default_factory=shared(_QUEUE_DEPTH))

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_url(value)


class RabbitmqCheck(SpecModel):
    """A RabbitMQ broker over AMQP (URL with credentials from a Secret)."""

    url: SecretKeySelector
    queues: list[QueueRule] = Field(default_factory=list, max_length=100)
    management: Management | None = None


class PrometheusCheck(SpecModel):
    """A PromQL instant query whose every series is held against bands (disk, error rate...)."""

    url: str = Field(min_length=1, max_length=2048)
    query: str = Field(min_length=1, max_length=4096)
    bands: UpperBands | None = None
    lower_bands: LowerBands | None = Field(default=None, alias="lowerBands")
    empty_result: Literal["Unknown", "Healthy", "Warning", "Critical"] = Field(
        default="Unknown", alias="emptyResult"
    )
    unit: str = Field(default="", max_length=16)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_url(value)

    @model_validator(mode="after")
    def _one_band(self) -> PrometheusCheck:
        if (self.bands is None) == (self.lower_bands is None):
            raise ValueError("set exactly one of bands, lowerBands")
        return self


class ResourcesCheck(SpecModel):
    """CPU and memory utilisation of a workload against the guide's bands.

    The target is a ScalingPolicy ``targetRef``: a Deployment/StatefulSet of the policy's
    namespace (metrics.k8s.io, relative to requests) or a Compose service (Docker stats,
    relative to limits).
    """

    target_ref: TargetRef = Field(alias="targetRef")
    cpu: UpperBands = Field(default_factory=shared(UpperBands(target=70, warning=80, critical=90)))
    memory: UpperBands = Field(
        default_factory=shared(UpperBands(target=80, warning=85, critical=95))
    )
    # average: total usage over total basis (as HPA and ScalingPolicy); max: the worst
    # replica (as the guide's per-container `docker stats` loop).
    aggregate: Literal["average", "max"] = "average"

    @field_validator("target_ref")
    @classmethod
    def _docker_host(cls, value: TargetRef) -> TargetRef:
        if value.is_compose:
            host = urlsplit(value.docker_host).hostname
            why = forbidden_host(host) if host else None
            if why:
                raise ValueError(f"dockerHost: {why}")
        return value


# --- logs checks: security events counted in access logs (docs/healthpolicy.md) -----------

LogField = Literal["line", "status", "method", "path", "userAgent", "remoteAddr"]
MIN_LOG_WINDOW = timedelta(minutes=1)
MAX_LOG_WINDOW = timedelta(hours=24)
_RULE_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def _compiles(value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"{value!r} is not a regular expression: {exc}") from None
    return value


class LogRule(SpecModel):
    """A named rule: a regex on the line, or a condition on one parsed access-log field,
    counted over ``window``; more than ``above`` in the window is a finding of ``severity``.

    A rule named like a default rule overrides only the fields it sets (``above: 100``
    keeps the default's pattern); ``enabled: false`` turns a default off.
    """

    name: str = Field(min_length=1, max_length=63, pattern=_RULE_NAME)
    regex: str | None = Field(default=None, min_length=1, max_length=1024)
    field: LogField | None = None
    status_in: list[int] | None = Field(default=None, alias="statusIn", min_length=1, max_length=50)
    matches: str | None = Field(default=None, min_length=1, max_length=1024)
    window: Annotated[Duration, within(MIN_LOG_WINDOW, MAX_LOG_WINDOW)] | None = None
    above: int | None = Field(default=None, ge=0, le=1_000_000_000)
    severity: Severity | None = None
    enabled: bool | None = None

    @field_validator("regex", "matches")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        return _compiles(value)

    @field_validator("status_in")
    @classmethod
    def _codes(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(not 100 <= c <= 599 for c in value):
            raise ValueError("status codes must be between 100 and 599")
        return value

    @model_validator(mode="after")
    def _one_condition(self) -> LogRule:
        if self.status_in is not None and self.field not in (None, "status"):
            raise ValueError("statusIn goes with field status")
        if self.matches is not None and self.field in (None, "status"):
            raise ValueError("matches needs a field other than status (or use regex)")
        return self


# The guide's security script (operations guide, Security Monitoring) as rules: failed
# logins alert above 50 an hour; scanners, injection and privilege words are reported.
DEFAULT_LOG_RULES: tuple[LogRule, ...] = (
    LogRule(
        name="failed-logins",
        field="status",
        status_in=[401, 403],
        window=timedelta(hours=1),
        above=50,
        severity="P2",
    ),
    LogRule(
        name="scanner-user-agent",
        field="userAgent",
        matches=r"(?i)sqlmap|nikto|nmap|masscan",
        window=timedelta(hours=1),
        above=0,
        severity="P3",
    ),
    LogRule(
        name="sql-injection",
        field="path",
        matches=(
            r"(?i)\bunion\b.{0,40}\bselect\b|\bselect\b.{1,80}\bfrom\b|\binsert\s+into\b"
            r"|\bdrop\s+(table|database)\b|\bdelete\s+from\b|'\s*or\s+'?1'?\s*=\s*'?1"
        ),
        window=timedelta(hours=1),
        above=0,
        severity="P3",
    ),
    LogRule(
        name="privilege-words",
        field="path",
        matches=r"(?i)\b(admin|superuser|root)\b",
        window=timedelta(hours=1),
        above=0,
        severity="P4",
    ),
)


class ComposeLogSource(SpecModel):
    """A Compose service's containers through the Docker Engine logs API."""

    project: str = Field(min_length=1, max_length=253)
    service: str = Field(min_length=1, max_length=253)
    docker_host: str = Field(
        default="unix:///var/run/docker.sock", alias="dockerHost", min_length=1, max_length=2048
    )

    @field_validator("docker_host")
    @classmethod
    def _docker_host(cls, value: str) -> str:
        check_port(value)
        host = urlsplit(value).hostname
        why = forbidden_host(host) if host else None
        if why:
            raise ValueError(f"dockerHost: {why}")
        return value


class PodLogSource(SpecModel):
    """The pods of a Deployment/StatefulSet of the policy's namespace (pods/log API)."""

    target_ref: TargetRef = Field(alias="targetRef")
    container: str | None = Field(default=None, min_length=1, max_length=63)

    @field_validator("target_ref")
    @classmethod
    def _kubernetes(cls, value: TargetRef) -> TargetRef:
        if value.is_compose:
            raise ValueError("pods needs a Deployment or StatefulSet; use compose for Compose")
        return value


class LogsCheck(SpecModel):
    """Security events in a workload's logs: the guide's rules (or yours) over a window."""

    compose: ComposeLogSource | None = None
    pods: PodLogSource | None = None
    rules: list[LogRule] = Field(default_factory=list, max_length=50)
    include_default_rules: bool = Field(default=True, alias="includeDefaultRules")
    # Bytes read per round at most (all containers together); the rest waits for the next.
    max_bytes: int = Field(default=1_048_576, alias="maxBytes", ge=1024, le=16_777_216)
    samples: int = Field(default=5, ge=0, le=20)

    @model_validator(mode="after")
    def _one_source(self) -> LogsCheck:
        if (self.compose is None) == (self.pods is None):
            raise ValueError("set exactly one of compose, pods")
        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate rule names: {', '.join(dupes)}")
        defaults = {r.name for r in DEFAULT_LOG_RULES} if self.include_default_rules else set()
        for r in self.rules:
            if r.name in defaults:
                continue
            if r.regex is None and r.field is None:
                raise ValueError(f"rule {r.name!r}: set regex, or field with statusIn/matches")
            if r.field is not None and r.status_in is None and r.matches is None:
                raise ValueError(f"rule {r.name!r}: field needs statusIn or matches")
            if r.severity is None:
                raise ValueError(f"rule {r.name!r}: set severity")
        if not self.effective_rules():
            raise ValueError("no rule is enabled")
        return self

    def effective_rules(self) -> list[LogRule]:
        """The defaults (unless excluded) with the spec's overrides, then the spec's own rules."""
        own = {r.name: r for r in self.rules}
        out: list[LogRule] = []
        for d in DEFAULT_LOG_RULES if self.include_default_rules else ():
            o = own.pop(d.name, None)
            merged = d
            if o is not None:
                update = {k: getattr(o, k) for k in o.model_fields_set if k != "name"}
                merged = d.model_copy(update=update)
            out.append(merged)
        out += own.values()
        return [r for r in out if r.enabled is not False]

    def describe(self) -> str:
        if self.compose is not None:
            return f"compose:{self.compose.project}/{self.compose.service}"
        assert self.pods is not None
        return self.pods.target_ref.describe()


@dataclass(frozen=True)
class LogRead:
    """What a log reader got in one round: lines as ``"<RFC 3339> <line>"``, the bytes read,
    lines dropped (cut at the byte cap, or too long), and ``limit_ns``: when a source was
    cut at the cap, the newest timestamp up to which every source was read (later lines
    are left for the next round)."""

    lines: tuple[str, ...]
    bytes_read: int
    dropped: int = 0
    truncated: bool = False
    limit_ns: int | None = None


class Check(SpecModel):
    """One named check with exactly one probe type."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    timeout: Duration | None = None
    depends_on: list[str] | None = Field(default=None, alias="dependsOn")
    http: HttpCheck | None = None
    postgres: PostgresCheck | None = None
    memcached: MemcachedCheck | None = None
    rabbitmq: RabbitmqCheck | None = None
    prometheus: PrometheusCheck | None = None
    resources: ResourcesCheck | None = None
    logs: LogsCheck | None = None

    @model_validator(mode="after")
    def _one_type(self) -> Check:
        kinds = ("http", "postgres", "memcached", "rabbitmq", "prometheus", "resources", "logs")
        set_ = [t for t in kinds if getattr(self, t)]
        if len(set_) != 1:
            raise ValueError(f"set exactly one of {', '.join(kinds)}")
        return self

    @property
    def type(self) -> CheckType:
        if self.http is not None:
            return "http"
        if self.postgres is not None:
            return "postgres"
        if self.memcached is not None:
            return "memcached"
        if self.prometheus is not None:
            return "prometheus"
        if self.resources is not None:
            return "resources"
        if self.logs is not None:
            return "logs"
        return "rabbitmq"


class IncidentRule(SpecModel):
    """Findings (optionally of some check types or checks) that make an incident of a severity."""

    severity: Severity
    findings: list[FindingCode] = Field(min_length=1)
    check_types: list[CheckType] | None = Field(default=None, alias="checkTypes")
    checks: list[str] | None = None


class IncidentRules(SpecModel):
    """Rules are tried in order; the guide's table follows unless includeDefaults is false."""

    rules: list[IncidentRule] = Field(default_factory=list)
    include_defaults: bool = Field(default=True, alias="includeDefaults")


class Webhook(SpecModel):
    """Where incident notifications go (generic JSON or Alertmanager v2 alerts)."""

    url: str | None = Field(default=None, max_length=2048)
    url_from: SecretKeySelector | None = Field(default=None, alias="urlFrom")
    format: Literal["generic", "alertmanager"] = "generic"
    timeout: Annotated[Duration, within(MIN_WEBHOOK_TIMEOUT, MAX_WEBHOOK_TIMEOUT)] = timedelta(
        seconds=5
    )
    retries: int = Field(default=3, ge=0, le=10)
    authorization: SecretKeySelector | None = None
    min_severity: Severity = Field(default="P4", alias="minSeverity")
    # Extra Alertmanager labels of this receiver's alerts (route a level to its team); the
    # operator's own labels win on a clash.
    labels: dict[str, str] = Field(default_factory=dict, max_length=10)

    @field_validator("labels")
    @classmethod
    def _label_names(cls, value: dict[str, str]) -> dict[str, str]:
        for k, v in value.items():
            if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]{0,62}", k) or len(v) > 253:
                raise ValueError(f"label {k[:63]!r}: a Prometheus label name, value <= 253 chars")
        return value

    @model_validator(mode="after")
    def _target(self) -> Webhook:
        if (self.url is None) == (self.url_from is None):
            raise ValueError("set exactly one of url, urlFrom")
        if self.url is not None:
            _check_url(self.url)
        return self


class EscalationStep(SpecModel):
    """After an incident stays open this long, escalate to ``level`` (and its webhook)."""

    after: Duration
    level: int = Field(ge=2, le=9)
    webhook: Webhook | None = None


_GUIDE_ESCALATION = (
    EscalationStep(after=timedelta(minutes=30), level=2),
    EscalationStep(after=timedelta(hours=1), level=3),
)


def _guide_escalation() -> list[EscalationStep]:
    return list(_GUIDE_ESCALATION)


class Alerting(SpecModel):
    """Events always; a webhook optionally; escalation steps by time unresolved."""

    webhook: Webhook | None = None
    escalation: list[EscalationStep] = Field(default_factory=_guide_escalation, max_length=8)

    @field_validator("escalation")
    @classmethod
    def _increasing(cls, value: list[EscalationStep]) -> list[EscalationStep]:
        for a, b in itertools.pairwise(value):
            if not (a.after < b.after and a.level < b.level):
                raise ValueError("escalation steps must increase in both after and level")
        return value


class IncidentHistory(SpecModel):
    """Retention of the policy's resolved Incident objects: by count and by age."""

    count: int = Field(default=20, ge=0, le=1000)
    max_age: Duration = Field(default=timedelta(days=30), alias="maxAge")


class FlapDamping(SpecModel):
    """One incident for a check that oscillates, instead of one per swing."""

    # Consecutive rounds with nothing to report before the incident is resolved.
    resolve_after: int = Field(default=2, alias="resolveAfter", ge=1, le=100)
    # A new incident with the same root cause this soon after one was resolved re-opens it
    # (0s: never).
    reopen_within: Annotated[Duration, within(timedelta(0), MAX_INTERVAL)] = Field(
        default=timedelta(minutes=5), alias="reopenWithin"
    )


class RemediationWhen(SpecModel):
    """The findings an action is bound to: any of ``checks`` failing (Warning or Critical),
    or the incident's root cause being one of ``rootCauses``."""

    checks: list[str] | None = Field(default=None, max_length=50)
    root_causes: list[str] | None = Field(default=None, alias="rootCauses", max_length=50)

    @model_validator(mode="after")
    def _some(self) -> RemediationWhen:
        if not self.checks and not self.root_causes:
            raise ValueError("set checks or rootCauses")
        return self


class RolloutRestart(SpecModel):
    """``kubectl rollout restart``: a new restartedAt annotation on the pod template; the
    workload's own rolling update replaces the pods one batch at a time."""

    kind: Literal["Deployment", "StatefulSet"] = "Deployment"
    name: str = Field(min_length=1, max_length=253)


class TerminateQueries(SpecModel):
    """Terminate the sessions of the check's database whose query has been active longer
    than ``olderThan`` (never the operator's own or replication sessions)."""

    check: str = Field(min_length=1, max_length=63)
    older_than: Annotated[Duration, within(timedelta(seconds=1), timedelta(days=1))] = Field(
        default=timedelta(minutes=5), alias="olderThan"
    )


class FlushMemcached(SpecModel):
    """``flush_all`` on the Memcached the check probes (the guide's "clear the cache")."""

    check: str = Field(min_length=1, max_length=63)


class ComposeRestart(ComposeLogSource):
    """``docker compose restart`` of a Compose service, one container at a time."""


class RemediationAction(SpecModel):
    """One opt-in action bound to findings, with its guard rails."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    when: RemediationWhen
    rollout_restart: RolloutRestart | None = Field(default=None, alias="rolloutRestart")
    terminate_queries: TerminateQueries | None = Field(default=None, alias="terminateQueries")
    flush_memcached: FlushMemcached | None = Field(default=None, alias="flushMemcached")
    compose_restart: ComposeRestart | None = Field(default=None, alias="composeRestart")
    # None: the remediation's dryRun.
    dry_run: bool | None = Field(default=None, alias="dryRun")
    max_attempts: int = Field(default=1, alias="maxAttempts", ge=1, le=10)
    cooldown: Annotated[Duration, within(timedelta(0), timedelta(days=1))] = timedelta(minutes=5)
    # Only once the incident is this old (the cause may go away by itself).
    after: Annotated[Duration, within(timedelta(0), timedelta(days=1))] = timedelta(0)
    during_maintenance: bool = Field(default=False, alias="duringMaintenance")

    @model_validator(mode="after")
    def _one(self) -> RemediationAction:
        kinds = {
            "rolloutRestart": self.rollout_restart,
            "terminateQueries": self.terminate_queries,
            "flushMemcached": self.flush_memcached,
            "composeRestart": self.compose_restart,
        }
        if sum(v is not None for v in kinds.values()) != 1:
            raise ValueError(f"set exactly one of {', '.join(kinds)}")
        return self

    @property
    def kind(self) -> str:
        if self.rollout_restart is not None:
            return "RolloutRestart"
        if self.terminate_queries is not None:
            return "TerminateQueries"
        if self.compose_restart is not None:
            return "ComposeRestart"
        return "FlushMemcached"

    @property
    def check_ref(self) -> str | None:
        """The check whose target the action works on (None: a workload)."""
        if self.terminate_queries is not None:
            return self.terminate_queries.check
        if self.flush_memcached is not None:
            return self.flush_memcached.check
        return None


class Remediation(SpecModel):
    """Opt-in remediation actions (docs/incidents.md#remediation)."""

    dry_run: bool = Field(default=False, alias="dryRun")
    actions: list[RemediationAction] = Field(default_factory=list, max_length=10)
    # After an action that ran, the policy's next round comes this soon (never later than
    # its interval) and its verdict goes on the Incident's timeline (docs/healthpolicy.md).
    verify_after: Annotated[Duration, within(timedelta(seconds=1), timedelta(hours=1))] = Field(
        default=timedelta(seconds=15), alias="verifyAfter"
    )


class HealthPolicySpec(SpecModel):
    """The whole spec of a HealthPolicy."""

    interval: Annotated[Duration, within(MIN_INTERVAL, MAX_INTERVAL)] = timedelta(seconds=30)
    timeout: Duration | None = None  # default min(5s, interval)
    failure_threshold: int = Field(default=3, alias="failureThreshold", ge=1, le=100)
    success_threshold: int = Field(default=1, alias="successThreshold", ge=1, le=100)
    checks: list[Check] = Field(min_length=1, max_length=50)
    incident_rules: IncidentRules = Field(
        default_factory=shared(IncidentRules()), alias="incidentRules"
    )
    alerting: Alerting = Field(default_factory=shared(Alerting()))
    # A ratio of requests (the cache hit ratio) is judged only on an interval with at
    # least this many requests (docs/healthpolicy.md: minimum sample).
    min_sample: int = Field(default=100, alias="minSample", ge=1, le=1_000_000_000)
    flap_damping: FlapDamping = Field(default_factory=shared(FlapDamping()), alias="flapDamping")
    suspend: bool = False
    incident_history: IncidentHistory = Field(
        default_factory=shared(IncidentHistory()), alias="incidentHistory"
    )
    remediation: Remediation | None = None

    @model_validator(mode="after")
    def _consistent(self) -> HealthPolicySpec:
        names = [c.name for c in self.checks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate check names: {', '.join(dupes)}")
        known = set(names)
        for c in self.checks:
            for dep in c.depends_on or ():
                if dep not in known or dep == c.name:
                    raise ValueError(f"check {c.name!r}: dependsOn {dep!r} is not another check")
            doc = c.http.health_document if c.http else None
            for comp in doc.components if doc else ():
                if comp.check is not None and comp.check not in known:
                    raise ValueError(
                        f"check {c.name!r}: component {comp.name!r} names unknown check"
                        f" {comp.check!r}"
                    )
            if c.timeout is not None and c.timeout > self.interval:
                raise ValueError(f"check {c.name!r}: timeout must not exceed interval")
        if self.timeout is not None and self.timeout > self.interval:
            raise ValueError("timeout must not exceed interval")
        self._remediation_refs(known)
        return self

    def _remediation_refs(self, known: set[str]) -> None:
        actions = self.remediation.actions if self.remediation else []
        names = [a.name for a in actions]
        if len(set(names)) != len(names):
            raise ValueError("remediation.actions: duplicate names")
        wanted = {"TerminateQueries": "postgres", "FlushMemcached": "memcached"}
        for i, a in enumerate(actions):
            at = f"remediation.actions[{i}]"
            for ref in [*(a.when.checks or ()), *(a.when.root_causes or ())]:
                if ref not in known:
                    raise ValueError(f"{at}.when names unknown check {ref!r}")
            ref = a.check_ref
            if ref is not None:
                target = self.check(ref)
                if target is None or target.type != wanted[a.kind]:
                    raise ValueError(f"{at}: {ref!r} is not a {wanted[a.kind]} check")

    def timeout_of(self, check: Check) -> timedelta:
        return check.timeout or self.timeout or min(timedelta(seconds=5), self.interval)

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    def workloads(self) -> list[tuple[str, str]]:
        """The Kubernetes workloads (kind, name) the policy names: its resources and logs
        checks' targets, its rollout restarts' (an Incident's usage evidence lists them
        first)."""
        refs: list[TargetRef] = []
        for c in self.checks:
            if c.resources is not None:
                refs.append(c.resources.target_ref)
            if c.logs is not None and c.logs.pods is not None:
                refs.append(c.logs.pods.target_ref)
        out = [(r.kind, str(r.name)) for r in refs if not r.is_compose and r.name]
        for a in self.remediation.actions if self.remediation else ():
            if a.rollout_restart is not None:
                out.append((a.rollout_restart.kind, a.rollout_restart.name))
        return list(dict.fromkeys(out))

    def verify_after(self) -> timedelta:
        """How soon after a remediation action the verifying round comes: its
        ``verifyAfter``, never later than the interval (the next round verifies anyway)."""
        wanted = self.remediation.verify_after if self.remediation else self.interval
        return min(wanted, self.interval)


# --- Status -----------------------------------------------------------------------------------
# The typed form of a HealthPolicy's status. Rounds build it as plain dicts (logic/health):
# validating a thousand policies' status every round cost CPU the scale targets do not allow,
# so tests hold the round's output to this model and readers (the CLI) parse with it.

CheckStateName = Literal["Healthy", "Warning", "Critical", "Unknown"]
SeverityName = Literal["P1", "P2", "P3", "P4"]


class FindingStatus(StatusModel):
    code: str
    level: Literal["warning", "critical"]
    message: str = ""
    component: str | None = None


class CheckStatus(StatusModel):
    """One entry of ``status.checks``; ``measurements`` is the probe's own (per type)."""

    name: str
    type: str
    state: CheckStateName
    observed_state: CheckStateName | None = Field(default=None, alias="observedState")
    reason: str = ""
    message: str = ""
    latency_ms: float | None = Field(default=None, alias="latencyMs")
    consecutive_successes: int = Field(default=0, alias="consecutiveSuccesses")
    consecutive_failures: int = Field(default=0, alias="consecutiveFailures")
    findings: list[FindingStatus] = Field(default_factory=list)
    measurements: dict[str, Any] = Field(default_factory=dict)


class RemediationSpent(StatusModel):
    """What one remediation action spent of its budget on the open incident."""

    action: str
    attempts: int
    last_at: Timestamp | None = Field(default=None, alias="lastAt")
    verify_at: Timestamp | None = Field(default=None, alias="verifyAt")


class IncidentStatus(StatusModel):
    """The open incident (``status.incident``) or one of ``status.recentIncidents``."""

    id: str
    severity: SeverityName
    max_severity: SeverityName | None = Field(default=None, alias="maxSeverity")
    root_cause: str | None = Field(default=None, alias="rootCause")
    summary: str = ""
    started_at: Timestamp | None = Field(default=None, alias="startedAt")
    ended_at: Timestamp | None = Field(default=None, alias="endedAt")
    duration_seconds: int | None = Field(default=None, alias="durationSeconds")
    escalation_level: int | None = Field(default=None, alias="escalationLevel")
    expected: bool | None = None
    maintenance_window: str | None = Field(default=None, alias="maintenanceWindow")
    incident_name: str | None = Field(default=None, alias="incidentName")
    grouped: bool | None = None
    acknowledged_by: str | None = Field(default=None, alias="acknowledgedBy")
    recovering_since: Timestamp | None = Field(default=None, alias="recoveringSince")
    healthy_rounds: int | None = Field(default=None, alias="healthyRounds")
    reopened: int | None = None
    remediation: list[RemediationSpent] | None = None


class HealthPolicyStatus(StatusModel):
    """``status`` of a HealthPolicy (the CRD's status schema)."""

    observed_generation: int | None = Field(default=None, alias="observedGeneration")
    conditions: list[Condition] = Field(default_factory=list)
    last_probe_time: Timestamp | None = Field(default=None, alias="lastProbeTime")
    severity: Literal["None", "P1", "P2", "P3", "P4"] | None = None
    worst_latency: str | None = Field(default=None, alias="worstLatency")
    worst_latency_ms: float | None = Field(default=None, alias="worstLatencyMs")
    checks: list[CheckStatus] = Field(default_factory=list)
    incident: IncidentStatus | None = None
    recent_incidents: list[IncidentStatus] = Field(default_factory=list, alias="recentIncidents")
