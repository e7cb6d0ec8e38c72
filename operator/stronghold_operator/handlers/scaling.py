"""ScalingPolicy handlers: one daemon per policy observes, asks the engine, acts, reports.

The decision itself is :func:`stronghold_operator.logic.scaling.decide` (pure). This module
reads replicas and utilisation through a platform target (Kubernetes scale subresource +
metrics.k8s.io, or a Docker Compose service), applies the decision, and writes status,
Events and Prometheus metrics.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import kopf
from prometheus_client import Counter, Gauge

from stronghold_operator import conditions as cond
from stronghold_operator.handlers.common import (
    GROUP,
    VERSION,
    Services,
    announce,
    compute_status,
    invalid_spec,
    maintenance_hold,
    services,
    track_watch,
)
from stronghold_operator.logic import scaling as engine
from stronghold_operator.metrics import forget_object, per_object, registry
from stronghold_operator.models.base import InvalidSpec, parse
from stronghold_operator.models.scaling import (
    MissingBasis,
    ReplicaUsage,
    ScalingPolicySpec,
    TargetNotFound,
)
from stronghold_operator.platforms.compose import ComposeService, ComposeTarget
from stronghold_operator.platforms.kube import call_json, patch_status
from stronghold_operator.platforms.metrics_api import MetricsUnavailableError
from stronghold_operator.platforms.workloads import KubeWorkload, list_hpas
from stronghold_operator.runtime.periodic import run_passes

PLURAL = "scalingpolicies"
IDLE_INTERVAL = 15.0  # seconds between passes while the spec is invalid or a pass failed

SCALING_ACTIVE = "ScalingActive"
SCALING_LIMITED = "ScalingLimited"
METRICS_AVAILABLE = "MetricsAvailable"
CONDITION_TYPES = (cond.READY, SCALING_ACTIVE, SCALING_LIMITED, METRICS_AVAILABLE)

REASON_TARGET_NOT_FOUND = "TargetNotFound"
REASON_MISSING_REQUESTS = "MissingRequests"
REASON_MISSING_LIMITS = "MissingLimits"
REASON_TARGET_UNREACHABLE = "TargetUnreachable"

track_watch(PLURAL)

REPLICAS = Gauge(
    "stronghold_scaling_replicas",
    "Replicas of a ScalingPolicy's target: current, and desired by the last decision",
    ["namespace", "policy", "kind"],
    registry=registry,
)
UTILISATION = Gauge(
    "stronghold_scaling_utilisation_percent",
    "Average utilisation of the target (percent of requests, or of limits for Docker)",
    ["namespace", "policy", "resource"],
    registry=registry,
)
DECISIONS = Counter(
    "stronghold_scaling_decisions_total",
    "Decisions of the scaling engine by action and reason",
    ["namespace", "policy", "action", "reason"],
    registry=registry,
)
SCALE_ACTIONS = Counter(
    "stronghold_scaling_actions_total",
    "Scale actions applied to targets",
    ["namespace", "policy", "direction"],
    registry=registry,
)
per_object(PLURAL, REPLICAS, UTILISATION, DECISIONS, SCALE_ACTIONS)


class Target(Protocol):
    """What the daemon needs of a target; platforms provide Kubernetes and Compose ones."""

    async def read_replicas(self) -> int: ...
    async def read_usage(self) -> list[ReplicaUsage]: ...
    async def scale(self, replicas: int) -> list[str]: ...


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


def make_target(policy: ScalingPolicySpec, namespace: str, svc: Services) -> Target:
    ref = policy.target_ref
    if ref.is_compose:
        return ComposeService(ComposeTarget(ref.project or "", ref.service or "", ref.docker_host))
    return KubeWorkload(svc.kube, namespace, ref.kind, ref.name or "")


async def evaluate(
    policy: ScalingPolicySpec,
    target: Target,
    memory: Memory,
    now: datetime,
    *,
    maintenance: str | None = None,
    conflict: str | None = None,
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
    )
    touched: list[str] = []
    if decision.acts:
        touched = await target.scale(decision.to_replicas)
    memory.state = engine.next_state(memory.state, decision)
    return Outcome(decision, error, tuple(touched))


def _older(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether policy ``a`` was created before ``b`` (the older one keeps the target)."""

    def key(m: Mapping[str, Any]) -> tuple[str, str, str]:
        return (
            str(m.get("creationTimestamp", "")),
            str(m.get("namespace", "")),
            str(m.get("name", "")),
        )

    return key(a) < key(b)


async def find_conflict(
    svc: Services, policy: ScalingPolicySpec, meta: Mapping[str, Any]
) -> str | None:
    """Another autoscaler of the same target: an HPA, or an older ScalingPolicy."""
    ns = str(meta.get("namespace"))
    ref = policy.target_ref
    if not ref.is_compose:
        for hpa in await list_hpas(svc.kube, ns):
            if hpa.target_kind == ref.kind and hpa.target_name == ref.name:
                return (
                    f"HorizontalPodAutoscaler {hpa.name} ({hpa.api_version}) also scales "
                    f"{ref.describe()}"
                )
    if ref.is_compose and svc.namespaces is None:
        listed = await call_json(svc.kube.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL)
        items = list(listed.get("items", []))
    else:
        items = []
        for n in [ns] if not ref.is_compose else (svc.namespaces or [ns]):
            listed = await call_json(
                svc.kube.custom.list_namespaced_custom_object, GROUP, VERSION, n, PLURAL
            )
            items += listed.get("items", [])
    for other in items:
        om = other.get("metadata", {})
        if om.get("uid") == meta.get("uid"):
            continue
        try:
            theirs = parse(ScalingPolicySpec, other.get("spec") or {})
        except InvalidSpec:
            continue
        if theirs.target_ref.identity() == ref.identity() and _older(om, meta):
            return (
                f"ScalingPolicy {om.get('namespace')}/{om.get('name')} already scales "
                f"{ref.describe()}"
            )
    return None


def _pct(v: float | None) -> int | None:
    return None if v is None else round(v)


def _decision_status(d: engine.Decision, previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """lastDecision; its time is when this decision was first reached (kept while repeated)."""
    same = previous is not None and (
        previous.get("action"),
        previous.get("from"),
        previous.get("to"),
        previous.get("reason"),
    ) == (d.action, d.from_replicas, d.to_replicas, d.reason)
    when = str(previous.get("time")) if same and previous else cond.rfc3339(d.time)
    return {
        "time": when,
        "action": d.action,
        "from": d.from_replicas,
        "to": d.to_replicas,
        "reason": d.reason,
        "message": d.message,
    }


def desired_status(
    policy: ScalingPolicySpec,
    outcome: Outcome,
    state: engine.ScalingState,
    status: Mapping[str, Any],
) -> tuple[dict[str, Any], list[cond.Condition]]:
    """Status fields and conditions for one evaluation."""
    d = outcome.decision
    current = d.to_replicas if d.acts else d.from_replicas
    last_scale = state.last_scale
    fields: dict[str, Any] = {
        "target": policy.target_ref.describe(),
        "currentReplicas": current,
        "desiredReplicas": d.to_replicas,
        "currentCpuUtilizationPercent": _pct(d.cpu_percent),
        "currentMemoryUtilizationPercent": _pct(d.memory_percent),
        "belowThresholdsSince": cond.rfc3339(d.below_since) if d.below_since else None,
        "lastObservedTime": cond.rfc3339(d.observed_at) if d.observed_at else None,
        "lastScaleTime": cond.rfc3339(last_scale) if last_scale else None,
        "lastScaleUpTime": cond.rfc3339(state.last_scale_up) if state.last_scale_up else None,
        "lastScaleDownTime": (
            cond.rfc3339(state.last_scale_down) if state.last_scale_down else None
        ),
        "lastDecision": _decision_status(d, status.get("lastDecision")),
    }
    return fields, _conditions(policy, outcome)


def _conditions(policy: ScalingPolicySpec, outcome: Outcome) -> list[cond.Condition]:
    """Ready, ScalingActive, ScalingLimited and MetricsAvailable for one evaluation."""
    d = outcome.decision
    if d.reason == engine.CONFLICTING:
        ready = cond.Condition(cond.READY, "False", engine.CONFLICTING, d.message)
    else:
        ready = cond.Condition(
            cond.READY, "True", cond.REASON_RECONCILED, f"scaling {policy.target_ref.describe()}"
        )
    inactive = {
        engine.CONFLICTING,
        engine.MAINTENANCE,
        engine.PAUSED,
        engine.DRY_RUN,
        engine.METRICS_UNAVAILABLE,
    }
    if policy.dry_run and d.reason not in inactive - {engine.DRY_RUN}:
        active = cond.Condition(
            SCALING_ACTIVE, "False", engine.DRY_RUN, f"dry run, not applied: {d.message}"
        )
    elif d.reason in inactive:
        active = cond.Condition(SCALING_ACTIVE, "False", d.reason, d.message)
    else:
        active = cond.Condition(SCALING_ACTIVE, "True", "Active", d.message)
    if d.limited:
        limited = cond.Condition(SCALING_LIMITED, "True", d.limited, d.message)
    else:
        limited = cond.Condition(
            SCALING_LIMITED,
            "False",
            "WithinRange",
            f"desired {d.to_replicas} within [{policy.min_replicas}, {policy.max_replicas}]",
        )
    if d.metrics_available:
        metrics = cond.Condition(
            METRICS_AVAILABLE,
            "True",
            "MetricsReported",
            f"CPU {_pct(d.cpu_percent)}%, memory {_pct(d.memory_percent)}% "
            f"of {'limits' if policy.target_ref.is_compose else 'requests'}",
        )
    else:
        why = outcome.metrics_error or d.message
        metrics = cond.Condition(METRICS_AVAILABLE, "False", engine.METRICS_UNAVAILABLE, why)
    return [ready, active, limited, metrics]


def failure_status(reason: str, message: str) -> list[cond.Condition]:
    """Conditions when the target cannot be evaluated at all: no scaling."""
    return [
        cond.Condition(cond.READY, "False", reason, message),
        cond.Condition(SCALING_ACTIVE, "False", reason, message),
        cond.Condition(SCALING_LIMITED, "False", reason, "not evaluated"),
        cond.Condition(METRICS_AVAILABLE, "False", reason, message),
    ]


def _record_metrics(ns: str, name: str, d: engine.Decision) -> None:
    current = d.to_replicas if d.acts else d.from_replicas
    REPLICAS.labels(ns, name, "current").set(current)
    REPLICAS.labels(ns, name, "desired").set(d.to_replicas)
    for resource, value in (("cpu", d.cpu_percent), ("memory", d.memory_percent)):
        if value is not None:
            UTILISATION.labels(ns, name, resource).set(value)
    DECISIONS.labels(ns, name, d.action, d.reason).inc()
    if d.acts:
        SCALE_ACTIONS.labels(ns, name, "up" if d.action == engine.SCALE_UP else "down").inc()


def _forget_metrics(ns: str, name: str) -> None:
    forget_object(PLURAL, ns, name)  # every series, the counters' too


async def _write(
    svc: Services,
    body: kopf.Body,
    status: Mapping[str, Any],
    fields: Mapping[str, Any],
    updates: list[cond.Condition],
    now: datetime,
) -> None:
    meta = body["metadata"]
    delta, moved = compute_status(body, status, fields, updates, now)
    await patch_status(svc.kube, PLURAL, meta["namespace"], meta["name"], delta)
    announce(body, moved)


def _announce_decision(body: kopf.Body, d: engine.Decision, previous: Mapping[str, Any]) -> None:
    """An Event on every scale action; a dry-run decision only when it is new."""
    if d.acts:
        reason = "ScaledUp" if d.action == engine.SCALE_UP else "ScaledDown"
        kopf.event(body, type="Normal", reason=reason, message=d.message)
    elif d.reason == engine.DRY_RUN and (previous.get("reason"), previous.get("to")) != (
        d.reason,
        d.to_replicas,
    ):
        kopf.event(body, type="Normal", reason="DryRun", message=d.message)


async def reconcile_once(
    svc: Services, body: kopf.Body, memory: Memory, now: datetime, logger: Any
) -> ScalingPolicySpec | None:
    """One pass of the daemon. Returns the parsed policy (None when the spec is invalid)."""
    meta, status = body["metadata"], body.get("status") or {}
    try:
        policy = parse(ScalingPolicySpec, body.get("spec") or {})
    except InvalidSpec:
        return None  # reported by the validate handler; wait for a new generation
    if not status.get("conditions"):
        await _write(svc, body, status, {}, cond.unknown_all(CONDITION_TYPES), now)
        status = {
            **status,
            "conditions": [c.to_dict(None, "") for c in cond.unknown_all(CONDITION_TYPES)],
        }
    ns, name = meta["namespace"], meta["name"]
    target = make_target(policy, ns, svc)
    maintenance = maintenance_hold(svc, meta)  # a window gone without release holds no more
    try:
        conflict = await find_conflict(svc, policy, meta)
        outcome = await evaluate(
            policy, target, memory, now, maintenance=maintenance, conflict=conflict
        )
    except TargetNotFound as exc:
        await _write(svc, body, status, {}, failure_status(REASON_TARGET_NOT_FOUND, str(exc)), now)
        return policy
    except MissingBasis as exc:
        reason = REASON_MISSING_LIMITS if policy.target_ref.is_compose else REASON_MISSING_REQUESTS
        await _write(svc, body, status, {}, failure_status(reason, str(exc)), now)
        return policy
    except (ConnectionError, OSError) as exc:
        await _write(
            svc, body, status, {}, failure_status(REASON_TARGET_UNREACHABLE, str(exc)), now
        )
        return policy
    d = outcome.decision
    if d.acts:
        logger.info("%s (%s)", d.message, ", ".join(outcome.touched))
    _announce_decision(body, d, status.get("lastDecision") or {})
    _record_metrics(ns, name, d)
    fields, updates = desired_status(policy, outcome, memory.state, status)
    await _write(svc, body, status, fields, updates, now)
    return policy


@kopf.on.create(GROUP, VERSION, PLURAL, id="validate")
@kopf.on.update(GROUP, VERSION, PLURAL, id="validate")
@kopf.on.resume(GROUP, VERSION, PLURAL, id="validate")
async def validate(
    body: kopf.Body, spec: kopf.Spec, status: kopf.Status, patch: kopf.Patch, **_: Any
) -> None:
    """Refuse a spec the operator cannot act on (Ready=False, InvalidSpec); the daemon waits."""
    try:
        parse(ScalingPolicySpec, spec)
    except InvalidSpec as exc:
        raise invalid_spec(patch, body, status, exc, CONDITION_TYPES, cond.utcnow()) from None


@kopf.daemon(
    GROUP,
    VERSION,
    PLURAL,
    id="scaling",
    cancellation_timeout=10,
    initial_delay=lambda **_: random.uniform(0, 1),
)
async def scaling_daemon(
    body: kopf.Body,
    status: kopf.Status,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped,
    logger: Any,
    **kwargs: Any,
) -> None:
    """Every ``spec.interval``: observe the target, decide, scale, and report in status."""
    svc = services(memo)
    svc.remember_windows(kwargs)
    memory = Memory.from_status(status)
    meta = body["metadata"]
    uid = svc.follow(body)

    async def one_pass() -> float:
        policy = await reconcile_once(svc, body, memory, cond.utcnow(), logger)
        return IDLE_INTERVAL if policy is None else policy.interval.total_seconds()

    try:
        await run_passes(one_pass, stopped, logger, what="scaling", retry_after=IDLE_INTERVAL)
    finally:
        _forget_metrics(meta["namespace"], meta["name"])
        svc.unfollow(uid)
