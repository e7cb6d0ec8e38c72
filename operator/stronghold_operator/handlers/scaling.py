"""ScalingPolicy handlers: kopf adapters over :mod:`stronghold_operator.services.scaling`.

Each pass parses the spec, builds the ports (a platform target, the autoscaler lookup, the
clock, the maintenance hold), runs the service and writes its typed status through
:func:`stronghold_operator.runtime.status.write_status`; Events for scale actions and the
Prometheus series are recorded here from the service's outcome.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import kopf
from prometheus_client import Counter, Gauge

from stronghold_operator import conditions as cond
from stronghold_operator.controllers.common import (
    GROUP,
    VERSION,
    Services,
    invalid_spec,
    maintenance_hold,
    services,
    track_watch,
)
from stronghold_operator.logic import scaling as engine
from stronghold_operator.metrics import forget_object, per_object, registry
from stronghold_operator.models.base import InvalidSpec, parse
from stronghold_operator.models.scaling import VOCABULARY, ScalingPolicySpec
from stronghold_operator.platforms.compose import ComposeService, ComposeTarget
from stronghold_operator.platforms.workloads import KubeAutoscalers, KubeWorkload
from stronghold_operator.runtime import events
from stronghold_operator.runtime.periodic import run_passes
from stronghold_operator.runtime.status import write_status
from stronghold_operator.services import scaling as service

PLURAL = "scalingpolicies"
IDLE_INTERVAL = 15.0  # seconds between passes while the spec is invalid or a pass failed
CONDITION_TYPES = VOCABULARY.types

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


def make_target(policy: ScalingPolicySpec, namespace: str, svc: Services) -> service.Target:
    ref = policy.target_ref
    if ref.is_compose:
        return ComposeService(ComposeTarget(ref.project or "", ref.service or "", ref.docker_host))
    return KubeWorkload(svc.kube, namespace, ref.kind, ref.name or "")


def make_ports(svc: Services, policy: ScalingPolicySpec, meta: Mapping[str, Any]) -> service.Ports:
    return service.Ports(
        target=make_target(policy, meta["namespace"], svc),
        autoscalers=KubeAutoscalers(svc.kube, svc.namespaces),
        clock=cond.utcnow,
        # A window gone without release holds no more (read at each pass).
        maintenance=lambda: maintenance_hold(svc, meta),
    )


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


def _announce_decision(body: kopf.Body, d: engine.Decision, previous: Mapping[str, Any]) -> None:
    """An Event on every scale action; a dry-run decision only when it is new."""
    if d.acts:
        reason = "ScaledUp" if d.action == engine.SCALE_UP else "ScaledDown"
        events.post(body, type="Normal", reason=reason, message=d.message)
    elif d.reason == engine.DRY_RUN and (previous.get("reason"), previous.get("to")) != (
        d.reason,
        d.to_replicas,
    ):
        events.post(body, type="Normal", reason="DryRun", message=d.message)


def _report(
    body: kopf.Body, result: service.Pass, previous: Mapping[str, Any], logger: Any
) -> None:
    """Log, Event and Prometheus series for an evaluated pass (nothing when it failed)."""
    if result.outcome is None:
        return
    d = result.outcome.decision
    if d.acts:
        logger.info("%s (%s)", d.message, ", ".join(result.outcome.touched))
    _announce_decision(body, d, previous)
    _record_metrics(body["metadata"]["namespace"], body["metadata"]["name"], d)


async def reconcile_once(
    svc: Services, body: kopf.Body, memory: service.Memory, logger: Any
) -> ScalingPolicySpec | None:
    """One pass of the daemon. Returns the parsed policy (None when the spec is invalid)."""
    try:
        policy = parse(ScalingPolicySpec, body.get("spec") or {})
    except InvalidSpec:
        return None  # reported by the validate handler; wait for a new generation
    status: Mapping[str, Any] = body.get("status") or {}
    if not status.get("conditions"):
        status = await write_status(
            svc.kube, PLURAL, body, service.initial_status(), cond.utcnow(), status
        )
    ports = make_ports(svc, policy, body["metadata"])
    result = await service.reconcile(policy, body["metadata"], ports, memory, status)
    _report(body, result, status.get("lastDecision") or {}, logger)
    await write_status(svc.kube, PLURAL, body, result.status, result.now, status)
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
    memory = service.Memory.from_status(status)
    meta = body["metadata"]
    uid = svc.follow(body)

    async def one_pass() -> float:
        policy = await reconcile_once(svc, body, memory, logger)
        return IDLE_INTERVAL if policy is None else policy.interval.total_seconds()

    try:
        await run_passes(one_pass, stopped, logger, what="scaling", retry_after=IDLE_INTERVAL)
    finally:
        _forget_metrics(meta["namespace"], meta["name"])
        svc.unfollow(uid)
