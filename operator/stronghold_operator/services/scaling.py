"""ScalingPolicy service: observe the target, decide (logic/scaling.py), act, return status.

I/O happens only through the ports below: platforms/ implement :class:`Target`
(``KubeWorkload``, ``ComposeService``) and :class:`Autoscalers` (``IndexedAutoscalers``);
the controller builds :class:`Ports`. Unit tests use in-memory fakes of these Protocols.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from stronghold_operator import conditions as cond
from stronghold_operator.logic import scaling as engine
from stronghold_operator.models.scaling import (
    METRICS_AVAILABLE,
    READY,
    REASON_ACTIVE,
    REASON_INVALID_ANNOTATION,
    REASON_METRICS_REPORTED,
    REASON_MISSING_LIMITS,
    REASON_MISSING_REQUESTS,
    REASON_TARGET_NOT_FOUND,
    REASON_TARGET_UNREACHABLE,
    REASON_WITHIN_RANGE,
    SCALING_ACTIVE,
    SCALING_LIMITED,
    VOCABULARY,
    Claim,
    LastDecision,
    MetricsUnavailableError,
    MissingBasis,
    ReplicaUsage,
    ScalingPolicySpec,
    ScalingPolicyStatus,
    TargetNotFound,
)
from stronghold_operator.models.status import Condition

# --- Ports ---------------------------------------------------------------------------------


class Target(Protocol):
    """The workload being scaled: a Deployment/StatefulSet or a Compose service."""

    async def read_replicas(self) -> int: ...
    async def read_usage(self) -> list[ReplicaUsage]: ...
    async def scale(self, replicas: int) -> list[str]: ...


class Autoscalers(Protocol):
    """Who else scales workloads: HPAs, and ScalingPolicies (platforms/indexes.py answers
    from kopf's indexes: no LIST per pass)."""

    async def hpas(self, namespace: str, kind: str, name: str) -> Sequence[str]:
        """Names of the HPAs scaling that workload."""
        ...

    async def claims(self, scope: tuple[str, ...]) -> Sequence[Claim]:
        """The valid ScalingPolicies whose target is ``scope`` (:meth:`TargetRef.scope`)."""
        ...


@dataclass(frozen=True)
class Ports:
    target: Target
    autoscalers: Autoscalers
    clock: Callable[[], datetime]
    maintenance: Callable[[], str | None]  # the windows (or humans) freezing the policy now
    paused: Callable[[], str | None] = lambda: None  # the paused-until annotation's value


# --- State and results ---------------------------------------------------------------------


@dataclass
class Memory:
    """One policy's observation history and engine state (the state also lives in status)."""

    samples: list[engine.Sample] = field(default_factory=list)
    state: engine.ScalingState = field(default_factory=engine.ScalingState)

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> Memory:
        return cls(
            state=engine.ScalingState(
                last_scale_up=cond.parse_rfc3339(status.get("lastScaleUpTime")),
                last_scale_down=cond.parse_rfc3339(status.get("lastScaleDownTime")),
                below_since=cond.parse_rfc3339(status.get("belowThresholdsSince")),
                last_observed=cond.parse_rfc3339(status.get("lastObservedTime")),
            )
        )


@dataclass(frozen=True)
class Outcome:
    decision: engine.Decision
    metrics_error: str | None = None
    touched: tuple[str, ...] = ()
    paused_until: datetime | None = None  # the time-limited pause in force, if any


@dataclass(frozen=True)
class Pass:
    """One pass's result: the status to write; the outcome when the target was evaluated."""

    status: ScalingPolicyStatus
    now: datetime
    outcome: Outcome | None = None


def initial_status() -> ScalingPolicyStatus:
    """Every condition Unknown: the first sight of a policy."""
    return ScalingPolicyStatus(conditions=VOCABULARY.unknown_all(cond.REASON_INITIALIZING))


# --- The pass ------------------------------------------------------------------------------


async def reconcile(
    policy: ScalingPolicySpec,
    meta: Mapping[str, Any],
    ports: Ports,
    memory: Memory,
    previous: Mapping[str, Any],
) -> Pass:
    """Observe, decide, act once; ``previous`` is the status as it stands."""
    now = ports.clock()
    try:
        paused = engine.pause_request(ports.paused())
    except ValueError as exc:
        return Pass(failure_status(REASON_INVALID_ANNOTATION, str(exc)), now)
    try:
        conflict = await find_conflict(ports.autoscalers, policy, meta)
        outcome = await evaluate(
            policy,
            ports.target,
            memory,
            now,
            maintenance=ports.maintenance(),
            conflict=conflict,
            paused=paused,
        )
    except TargetNotFound as exc:
        return Pass(failure_status(REASON_TARGET_NOT_FOUND, str(exc)), now)
    except MissingBasis as exc:
        reason = REASON_MISSING_LIMITS if policy.target_ref.is_compose else REASON_MISSING_REQUESTS
        return Pass(failure_status(reason, str(exc)), now)
    except (ConnectionError, OSError) as exc:
        return Pass(failure_status(REASON_TARGET_UNREACHABLE, str(exc)), now)
    status = desired_status(policy, outcome, memory.state, previous.get("lastDecision"))
    return Pass(status, now, outcome)


async def evaluate(
    policy: ScalingPolicySpec,
    target: Target,
    memory: Memory,
    now: datetime,
    *,
    maintenance: str | None = None,
    conflict: str | None = None,
    paused: datetime | None = None,
) -> Outcome:
    """Observe, decide, act once. Raises TargetNotFound / MissingBasis (no scaling then)."""
    current = await target.read_replicas()
    error: str | None = None
    try:
        sample = engine.utilisation(await target.read_usage(), now)
        if not sample.complete:
            error = "no running replica reported usage"
    except MissingBasis:
        raise
    except (MetricsUnavailableError, ConnectionError, OSError) as exc:
        sample, error = engine.Sample(now, None, None), str(exc)
    # An empty sample is kept too: it breaks the "sustained below" run, as it should.
    memory.samples = engine.trim([*memory.samples, sample], policy, now)
    decision = engine.decide(
        policy,
        memory.samples,
        current,
        now,
        memory.state,
        maintenance=maintenance,
        conflict=conflict,
        paused=paused,
    )
    touched: list[str] = []
    if decision.acts:
        touched = await target.scale(decision.to_replicas)
    memory.state = engine.next_state(memory.state, decision)
    return Outcome(decision, error, tuple(touched), engine.paused_until(policy, paused, now))


async def find_conflict(
    autoscalers: Autoscalers, policy: ScalingPolicySpec, meta: Mapping[str, Any]
) -> str | None:
    """Another autoscaler of the same target: an HPA, or an older ScalingPolicy."""
    ns = str(meta.get("namespace"))
    ref = policy.target_ref
    if not ref.is_compose:
        for hpa in await autoscalers.hpas(ns, ref.kind, ref.name or ""):
            return f"HorizontalPodAutoscaler {hpa} also scales {ref.describe()}"
    mine = Claim(
        str(meta.get("creationTimestamp", "")),
        ns,
        str(meta.get("name", "")),
        str(meta.get("uid", "")),
    )
    # A Compose service may be scaled from any namespace (its scope has none); a workload
    # only from its own.
    for other in await autoscalers.claims(ref.scope(ns)):
        if other.uid != mine.uid and other < mine:
            return f"ScalingPolicy {other.namespace}/{other.name} already scales {ref.describe()}"
    return None


# --- Status --------------------------------------------------------------------------------


def _pct(v: float | None) -> int | None:
    return None if v is None else round(v)


def _last_decision(d: engine.Decision, previous: Mapping[str, Any] | None) -> LastDecision:
    """lastDecision; its time is when this decision was first reached (kept while repeated)."""
    same = previous is not None and (
        previous.get("action"),
        previous.get("from"),
        previous.get("to"),
        previous.get("reason"),
    ) == (d.action, d.from_replicas, d.to_replicas, d.reason)
    kept = cond.parse_rfc3339(previous.get("time")) if same and previous else None
    return LastDecision(
        time=kept or d.time,
        action=d.action,
        from_=d.from_replicas,
        to=d.to_replicas,
        reason=d.reason,
        message=d.message,
    )


def desired_status(
    policy: ScalingPolicySpec,
    outcome: Outcome,
    state: engine.ScalingState,
    previous_decision: Mapping[str, Any] | None = None,
) -> ScalingPolicyStatus:
    """Status fields and conditions for one evaluation (None fields are deleted)."""
    d = outcome.decision
    return ScalingPolicyStatus(
        conditions=_conditions(policy, outcome),
        target=policy.target_ref.describe(),
        current_replicas=d.to_replicas if d.acts else d.from_replicas,
        desired_replicas=d.to_replicas,
        current_cpu_utilization_percent=_pct(d.cpu_percent),
        current_memory_utilization_percent=_pct(d.memory_percent),
        below_thresholds_since=d.below_since,
        last_observed_time=d.observed_at,
        last_scale_time=state.last_scale,
        last_scale_up_time=state.last_scale_up,
        last_scale_down_time=state.last_scale_down,
        last_decision=_last_decision(d, previous_decision),
        paused_until=outcome.paused_until,
    )


_INACTIVE = {
    engine.CONFLICTING,
    engine.MAINTENANCE,
    engine.PAUSED,
    engine.DRY_RUN,
    engine.METRICS_UNAVAILABLE,
}


def _active(policy: ScalingPolicySpec, d: engine.Decision) -> Condition:
    if policy.dry_run and d.reason not in _INACTIVE - {engine.DRY_RUN}:
        return VOCABULARY.condition(
            SCALING_ACTIVE, "False", engine.DRY_RUN, f"dry run, not applied: {d.message}"
        )
    if d.reason in _INACTIVE:
        return VOCABULARY.condition(SCALING_ACTIVE, "False", d.reason, d.message)
    return VOCABULARY.condition(SCALING_ACTIVE, "True", REASON_ACTIVE, d.message)


def _conditions(policy: ScalingPolicySpec, outcome: Outcome) -> list[Condition]:
    """Ready, ScalingActive, ScalingLimited and MetricsAvailable for one evaluation."""
    d, c = outcome.decision, VOCABULARY.condition
    if d.reason == engine.CONFLICTING:
        ready = c(READY, "False", engine.CONFLICTING, d.message)
    else:
        ready = c(READY, "True", cond.REASON_RECONCILED, f"scaling {policy.target_ref.describe()}")
    if d.limited:
        limited = c(SCALING_LIMITED, "True", d.limited, d.message)
    else:
        limited = c(
            SCALING_LIMITED,
            "False",
            REASON_WITHIN_RANGE,
            f"desired {d.to_replicas} within [{policy.min_replicas}, {policy.max_replicas}]",
        )
    if d.metrics_available:
        metrics = c(
            METRICS_AVAILABLE,
            "True",
            REASON_METRICS_REPORTED,
            f"CPU {_pct(d.cpu_percent)}%, memory {_pct(d.memory_percent)}% "
            f"of {'limits' if policy.target_ref.is_compose else 'requests'}",
        )
    else:
        why = outcome.metrics_error or d.message
        metrics = c(METRICS_AVAILABLE, "False", engine.METRICS_UNAVAILABLE, why)
    return [ready, _active(policy, d), limited, metrics]


def failure_status(reason: str, message: str) -> ScalingPolicyStatus:
    """Conditions only when the target cannot be evaluated at all: no scaling."""
    c = VOCABULARY.condition
    return ScalingPolicyStatus(
        conditions=[
            c(READY, "False", reason, message),
            c(SCALING_ACTIVE, "False", reason, message),
            c(SCALING_LIMITED, "False", reason, "not evaluated"),
            c(METRICS_AVAILABLE, "False", reason, message),
        ]
    )
