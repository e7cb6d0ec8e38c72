"""ScalingPolicy: the spec model and the data the platforms hand to the decision engine."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, field_validator, model_validator

from stronghold_operator.models.base import Duration, SpecModel, check_port, within
from stronghold_operator.models.status import Condition, StatusModel, Timestamp, Vocabulary

KUBERNETES_KINDS = ("Deployment", "StatefulSet")
COMPOSE_KIND = "ComposeService"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"

# A human's time-limited pause (``stronghold scaling pause``): RFC 3339, honoured as well as
# spec.pausedUntil. An annotation, not spec, so GitOps tools do not revert it as drift.
PAUSED_UNTIL_ANNOTATION = "ops.stronghold.io/paused-until"

# Bounds of the durations (docs/scalingpolicy.md). The floor of interval keeps a policy from
# polling the metrics API in a loop; the e2e tests use 2s.
MIN_INTERVAL = timedelta(seconds=1)
MAX_INTERVAL = timedelta(hours=1)
MAX_STABILIZATION = timedelta(hours=1)
MAX_COOLDOWN = timedelta(hours=24)
MAX_SUSTAINED_FOR = timedelta(days=7)
MIN_MAX_AGE = timedelta(seconds=1)
MAX_MAX_AGE = timedelta(hours=1)

MetricsSource = Literal["metricsAPI", "docker"]


class TargetRef(SpecModel):
    """What to scale: a Deployment/StatefulSet (scale subresource) or a Compose service."""

    kind: Literal["Deployment", "StatefulSet", "ComposeService"]
    name: str | None = Field(default=None, min_length=1, max_length=253)
    project: str | None = Field(default=None, min_length=1, max_length=253)
    service: str | None = Field(default=None, min_length=1, max_length=253)
    docker_host: str = Field(
        default=DEFAULT_DOCKER_HOST, alias="dockerHost", min_length=1, max_length=2048
    )

    @field_validator("docker_host")
    @classmethod
    def _docker_port(cls, value: str) -> str:
        # urlsplit only checks the port when asked: an out-of-range port is refused here,
        # not later as a bare ValueError from the Docker client.
        check_port(value)
        return value

    @model_validator(mode="after")
    def _fields_for_kind(self) -> TargetRef:
        if self.kind == COMPOSE_KIND:
            if not self.project or not self.service:
                raise ValueError("a ComposeService target needs project and service")
        elif not self.name:
            raise ValueError(f"a {self.kind} target needs name")
        return self

    @property
    def is_compose(self) -> bool:
        return self.kind == COMPOSE_KIND

    def describe(self) -> str:
        """Short human form, used in status (printer column) and messages."""
        if self.is_compose:
            return f"compose:{self.project}/{self.service}"
        return f"{self.kind}/{self.name}"

    def identity(self) -> tuple[str, ...]:
        """What makes two targets the same object (for conflict detection)."""
        if self.is_compose:
            return (COMPOSE_KIND, self.docker_host, self.project or "", self.service or "")
        return (self.kind, self.name or "")

    def scope(self, namespace: str) -> tuple[str, ...]:
        """Where two policies' targets collide: a workload within its namespace, a Compose
        service wherever the policy is (the Docker host is shared)."""
        return self.identity() if self.is_compose else (namespace, *self.identity())


class Step(SpecModel):
    """The most one decision may change: the larger of ``pods`` and ``percent`` of current."""

    pods: int | None = Field(default=None, ge=1, le=1000)
    percent: int | None = Field(default=None, ge=1, le=1000)

    @model_validator(mode="after")
    def _one_at_least(self) -> Step:
        if self.pods is None and self.percent is None:
            raise ValueError("set pods, percent or both")
        return self


class ScaleUp(SpecModel):
    cpu_above_percent: float = Field(default=80, alias="cpuAbovePercent", gt=0, le=1000)
    memory_above_percent: float = Field(default=85, alias="memoryAbovePercent", gt=0, le=1000)
    # Above a band for this long before acting; zero acts on the first observation.
    stabilization: Annotated[Duration, within(timedelta(0), MAX_STABILIZATION)] = Field(
        default=timedelta(0), alias="stabilizationWindow"
    )
    max_step: Step = Field(default_factory=lambda: Step(pods=4, percent=100), alias="maxStep")
    cooldown: Annotated[Duration, within(timedelta(0), MAX_COOLDOWN)] = Field(
        default=timedelta(minutes=1)
    )
    # False: the cooldown ends early once every new replica is measured (logic/scaling.py).
    full_cooldown: bool = Field(default=False, alias="fullCooldown")


class ScaleDown(SpecModel):
    cpu_below_percent: float = Field(default=40, alias="cpuBelowPercent", ge=0, le=1000)
    memory_below_percent: float = Field(default=50, alias="memoryBelowPercent", ge=0, le=1000)
    sustained_for: Annotated[Duration, within(timedelta(0), MAX_SUSTAINED_FOR)] = Field(
        default=timedelta(minutes=30), alias="sustainedFor"
    )
    max_step: Step = Field(default_factory=lambda: Step(pods=1), alias="maxStep")
    cooldown: Annotated[Duration, within(timedelta(0), MAX_COOLDOWN)] = Field(
        default=timedelta(minutes=5)
    )


class Metrics(SpecModel):
    source: MetricsSource | None = None  # None: metricsAPI for Kubernetes, docker for Compose
    # An observation older than this counts as missing (hold, never scale down).
    max_age: Annotated[Duration, within(MIN_MAX_AGE, MAX_MAX_AGE)] = Field(
        default=timedelta(minutes=2), alias="maxAge"
    )


class ScalingPolicySpec(SpecModel):
    target_ref: TargetRef = Field(alias="targetRef")
    min_replicas: int = Field(default=1, alias="minReplicas", ge=1, le=10000)
    max_replicas: int = Field(alias="maxReplicas", ge=1, le=10000)
    interval: Annotated[Duration, within(MIN_INTERVAL, MAX_INTERVAL)] = Field(
        default=timedelta(seconds=15)
    )
    scale_up: ScaleUp = Field(default_factory=ScaleUp, alias="scaleUp")
    scale_down: ScaleDown = Field(default_factory=ScaleDown, alias="scaleDown")
    metrics: Metrics = Field(default_factory=Metrics)
    dry_run: bool = Field(default=False, alias="dryRun")
    paused: bool = False
    paused_until: AwareDatetime | None = Field(default=None, alias="pausedUntil")

    @model_validator(mode="after")
    def _consistent(self) -> ScalingPolicySpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) is greater than maxReplicas "
                f"({self.max_replicas})"
            )
        # Overlapping bands would scale up and down on the same load: refuse them.
        if self.scale_down.cpu_below_percent >= self.scale_up.cpu_above_percent:
            raise ValueError("scaleDown.cpuBelowPercent must be below scaleUp.cpuAbovePercent")
        if self.scale_down.memory_below_percent >= self.scale_up.memory_above_percent:
            raise ValueError(
                "scaleDown.memoryBelowPercent must be below scaleUp.memoryAbovePercent"
            )
        if self.interval <= timedelta(0):
            raise ValueError("interval must be positive")
        if self.metrics.source == "docker" and not self.target_ref.is_compose:
            raise ValueError("metrics.source docker needs a ComposeService target")
        if self.metrics.source == "metricsAPI" and self.target_ref.is_compose:
            raise ValueError("metrics.source metricsAPI needs a Deployment or StatefulSet target")
        return self

    @property
    def metrics_source(self) -> MetricsSource:
        if self.metrics.source is not None:
            return self.metrics.source
        return "docker" if self.target_ref.is_compose else "metricsAPI"


# --- What the platforms observe (plain data; the logic turns it into percentages) ---------


@dataclass(frozen=True)
class ReplicaUsage:
    """One replica (pod or container): usage and the basis it is measured against.

    Kubernetes: the basis is the sum of the containers' requests. Docker: the container's
    limits. CPU in cores, memory in bytes.
    """

    name: str
    cpu_cores: float
    memory_bytes: float
    cpu_basis_cores: float
    memory_basis_bytes: float
    timestamp: datetime


@dataclass(frozen=True, order=True)
class Claim:
    """A ScalingPolicy's claim on its target; the oldest claim keeps it (ordered by age,
    then namespace and name, so two policies created in the same second agree)."""

    created: str  # metadata.creationTimestamp (RFC 3339 sorts as text)
    namespace: str
    name: str
    uid: str


class MissingBasis(LookupError):
    """The target has no requests (Kubernetes) or limits (Docker) to measure against."""


class TargetNotFound(LookupError):
    """The target workload or Compose service does not exist."""


class MetricsUnavailableError(LookupError):
    """The metrics API is not served or did not answer."""


# --- Status: the condition vocabulary and the typed status --------------------------------

READY = "Ready"
SCALING_ACTIVE = "ScalingActive"
SCALING_LIMITED = "ScalingLimited"
METRICS_AVAILABLE = "MetricsAvailable"

REASON_ACTIVE = "Active"
REASON_WITHIN_RANGE = "WithinRange"
REASON_METRICS_REPORTED = "MetricsReported"
REASON_TARGET_NOT_FOUND = "TargetNotFound"
REASON_MISSING_REQUESTS = "MissingRequests"
REASON_MISSING_LIMITS = "MissingLimits"
REASON_TARGET_UNREACHABLE = "TargetUnreachable"
REASON_INVALID_ANNOTATION = "InvalidAnnotation"

VOCABULARY = Vocabulary(
    types=(READY, SCALING_ACTIVE, SCALING_LIMITED, METRICS_AVAILABLE),
    reasons=frozenset(
        {
            "Initializing",
            "InvalidSpec",
            "Reconciled",
            REASON_ACTIVE,
            REASON_WITHIN_RANGE,
            REASON_METRICS_REPORTED,
            REASON_TARGET_NOT_FOUND,
            REASON_MISSING_REQUESTS,
            REASON_MISSING_LIMITS,
            REASON_TARGET_UNREACHABLE,
            REASON_INVALID_ANNOTATION,
            # The engine's gates and limits (logic/scaling.py) also name conditions.
            "ConflictingAutoscaler",
            "MaintenanceWindow",
            "Paused",
            "DryRun",
            "MetricsUnavailable",
            "CappedByMax",
            "AtMin",
        }
    ),
    # Limited is the news; every other type is bad when False.
    bad_when_true=frozenset({SCALING_LIMITED}),
)


class LastDecision(StatusModel):
    """``status.lastDecision``: the engine's latest decision; ``time`` is when it was first
    reached (kept while it repeats)."""

    time: Timestamp
    action: Literal["ScaleUp", "ScaleDown", "Hold"]
    from_: int = Field(alias="from")
    to: int
    reason: str
    message: str


class ScalingPolicyStatus(StatusModel):
    """Everything the operator writes to a ScalingPolicy's status (crds/scalingpolicy.yaml)."""

    observed_generation: int | None = Field(default=None, alias="observedGeneration")
    conditions: list[Condition] = Field(default_factory=list)
    target: str | None = None
    current_replicas: int | None = Field(default=None, alias="currentReplicas")
    desired_replicas: int | None = Field(default=None, alias="desiredReplicas")
    current_cpu_utilization_percent: int | None = Field(
        default=None, alias="currentCpuUtilizationPercent"
    )
    current_memory_utilization_percent: int | None = Field(
        default=None, alias="currentMemoryUtilizationPercent"
    )
    below_thresholds_since: Timestamp | None = Field(default=None, alias="belowThresholdsSince")
    last_observed_time: Timestamp | None = Field(default=None, alias="lastObservedTime")
    last_scale_time: Timestamp | None = Field(default=None, alias="lastScaleTime")
    last_scale_up_time: Timestamp | None = Field(default=None, alias="lastScaleUpTime")
    last_scale_down_time: Timestamp | None = Field(default=None, alias="lastScaleDownTime")
    last_decision: LastDecision | None = Field(default=None, alias="lastDecision")
    # The end of a pause in force now (spec.pausedUntil or the paused-until annotation).
    paused_until: Timestamp | None = Field(default=None, alias="pausedUntil")
