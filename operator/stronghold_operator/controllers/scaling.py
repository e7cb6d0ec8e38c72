"""ScalingPolicy controller: one :class:`ScalingLoop` per policy on the kind's scheduler.

A pass parses the spec, builds the ports (the platform target, the autoscalers from kopf's
indexes, the clock, the maintenance hold), runs :func:`services.scaling.reconcile` and
writes its typed status through :func:`runtime.status.write_status`; Events for scale
actions and the Prometheus series are recorded here from the service's outcome.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, cast

import kopf
from prometheus_client import Counter, Gauge

from stronghold_operator import conditions as cond
from stronghold_operator.controllers.common import Services, feed, maintenance_hold, services
from stronghold_operator.logic import scaling as engine
from stronghold_operator.metrics import forget_object, per_object, registry
from stronghold_operator.models.base import InvalidSpec, parse
from stronghold_operator.models.common import MAINTENANCE_ANNOTATION
from stronghold_operator.models.scaling import PAUSED_UNTIL_ANNOTATION, ScalingPolicySpec
from stronghold_operator.platforms.compose import ComposeService, ComposeTarget
from stronghold_operator.platforms.indexes import IndexedAutoscalers
from stronghold_operator.platforms.workloads import KubeWorkload
from stronghold_operator.runtime import events as posting
from stronghold_operator.runtime.scheduler import Scheduler
from stronghold_operator.runtime.status import acknowledge, write_status
from stronghold_operator.services import scaling as service

PLURAL = "scalingpolicies"
HPA_INDEX = "hpa_targets"  # the kopf index ids (handlers/scaling.py), as handler kwargs
CLAIMS_INDEX = "scaling_claims"
IDLE_INTERVAL = 15.0  # seconds between passes while the spec is invalid or a pass failed

log = logging.getLogger("stronghold.scaling")

REPLICAS = Gauge(
    "stronghold_scaling_replicas",
    "Replicas of a ScalingPolicy's target: current, desired by the last decision, and the"
    " policy's min and max",
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


def _record_metrics(ns: str, name: str, d: engine.Decision, policy: ScalingPolicySpec) -> None:
    current = d.to_replicas if d.acts else d.from_replicas
    REPLICAS.labels(ns, name, "current").set(current)
    REPLICAS.labels(ns, name, "desired").set(d.to_replicas)
    # The bounds beside the counts: "how close to maxReplicas" is one division in PromQL.
    REPLICAS.labels(ns, name, "min").set(policy.min_replicas)
    REPLICAS.labels(ns, name, "max").set(policy.max_replicas)
    for resource, value in (("cpu", d.cpu_percent), ("memory", d.memory_percent)):
        if value is not None:
            UTILISATION.labels(ns, name, resource).set(value)
    DECISIONS.labels(ns, name, d.action, d.reason).inc()
    if d.acts:
        SCALE_ACTIONS.labels(ns, name, "up" if d.action == engine.SCALE_UP else "down").inc()


def _announce_decision(body: kopf.Body, d: engine.Decision, previous: Mapping[str, Any]) -> None:
    """An Event on every scale action; a dry-run decision only when it is new."""
    if d.acts:
        reason = "ScaledUp" if d.action == engine.SCALE_UP else "ScaledDown"
        posting.post(body, type="Normal", reason=reason, message=d.message)
    elif d.reason == engine.DRY_RUN and (previous.get("reason"), previous.get("to")) != (
        d.reason,
        d.to_replicas,
    ):
        posting.post(body, type="Normal", reason="DryRun", message=d.message)


def _annotation(body: Mapping[str, Any], key: str) -> str | None:
    return ((body.get("metadata") or {}).get("annotations") or {}).get(key)


def _hold(body: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """What holds the policy by annotation: the maintenance freeze (windows or humans) and
    the paused-until request."""
    return _annotation(body, MAINTENANCE_ANNOTATION), _annotation(body, PAUSED_UNTIL_ANNOTATION)


class ScalingLoop:
    """One ScalingPolicy between passes (a :class:`runtime.scheduler.Loop`): the latest body
    the watch delivered and the engine's memory, read from status at first sight (a
    restart resumes where the written status left off)."""

    def __init__(self, svc: Services, body: kopf.Body, autoscalers: service.Autoscalers) -> None:
        self.svc = svc
        self.body = body
        self.autoscalers = autoscalers
        self.memory = service.Memory.from_status(body.get("status") or {})
        self._hold = _hold(body)
        self._ack_only = False  # the next pass only acknowledges a new generation
        self._due = 0.0  # monotonic time of the next full pass

    def observe(self, body: Mapping[str, Any]) -> bool:
        """Only a new freeze or pause wakes a full pass early (holding is never wrong); a new
        spec or a lifted hold is acted on at the next pass, at the policy's cadence (an unpaused
        policy does not act in the same breath; an HPA applied just before is known). A new
        spec generation wakes a pass that only writes its observedGeneration (GitOps tools
        wait for it) and keeps the cadence."""
        generation = (self.body.get("metadata") or {}).get("generation")
        self.body = cast(kopf.Body, body)  # feed() hands on kopf's body of the event
        before, self._hold = self._hold, _hold(body)
        frozen = any(now and now != then for now, then in zip(self._hold, before, strict=True))
        renewed = (body.get("metadata") or {}).get("generation") != generation
        self._ack_only = (self._ack_only or renewed) and not frozen
        return renewed or frozen

    async def run(self) -> float:
        left = self._due - time.monotonic()
        if self._ack_only and left > 0:
            self._ack_only = False
            await self.acknowledge()
            return left
        self._ack_only = False
        policy = await self.reconcile_once()
        interval = IDLE_INTERVAL if policy is None else policy.interval.total_seconds()
        self._due = time.monotonic() + interval
        return interval

    async def acknowledge(self) -> None:
        """Write the new generation as observed and Reconciling=True until the next full
        pass acts on it. An invalid spec is the validate handler's to report (Stalled)."""
        body = self.body
        try:
            parse(ScalingPolicySpec, body.get("spec") or {})
        except InvalidSpec:
            return
        await acknowledge(self.svc.kube, PLURAL, body, body.get("status") or {}, cond.utcnow())

    def close(self) -> None:
        meta = self.body["metadata"]
        forget_object(PLURAL, meta["namespace"], meta["name"])  # every series, counters' too

    async def settle(self) -> None:
        return None  # status writes are awaited within the pass

    def ports(self, policy: ScalingPolicySpec) -> service.Ports:
        meta = self.body["metadata"]
        return service.Ports(
            target=make_target(policy, meta["namespace"], self.svc),
            autoscalers=self.autoscalers,
            clock=cond.utcnow,
            # The annotations of the latest event; a window gone without release holds no more.
            maintenance=lambda: maintenance_hold(self.svc, self.body["metadata"]),
            paused=lambda: _annotation(self.body, PAUSED_UNTIL_ANNOTATION),
        )

    async def reconcile_once(self) -> ScalingPolicySpec | None:
        """One pass. Returns the parsed policy (None when the spec is invalid)."""
        body = self.body
        try:
            policy = parse(ScalingPolicySpec, body.get("spec") or {})
        except InvalidSpec:
            return None  # reported by the validate handler; a new generation wakes the loop
        kube = self.svc.kube
        status: Mapping[str, Any] = body.get("status") or {}
        if not status.get("conditions"):
            status = await write_status(
                kube, PLURAL, body, service.initial_status(), cond.utcnow(), status
            )
        status = await acknowledge(kube, PLURAL, body, status, cond.utcnow()) or status
        ports = self.ports(policy)
        result = await service.reconcile(policy, body["metadata"], ports, self.memory, status)
        self.report(result, status.get("lastDecision") or {}, policy)
        await write_status(kube, PLURAL, body, result.status, result.now, status)
        return policy

    def report(
        self, result: service.Pass, previous: Mapping[str, Any], policy: ScalingPolicySpec
    ) -> None:
        """Log, Event and Prometheus series for an evaluated pass (nothing when it failed)."""
        if result.outcome is None:
            return
        d, meta = result.outcome.decision, self.body["metadata"]
        if d.acts:
            log.info(
                "%s/%s: %s (%s)",
                meta["namespace"],
                meta["name"],
                d.message,
                ", ".join(result.outcome.touched),
            )
        _announce_decision(self.body, d, previous)
        _record_metrics(meta["namespace"], meta["name"], d, policy)


def new_scheduler() -> Scheduler[ScalingLoop]:
    """The kind's one scheduler (kept in :class:`Services`, stopped at operator cleanup)."""
    return Scheduler[ScalingLoop]("ScalingPolicy", retry_after=IDLE_INTERVAL)


def track(
    memo: kopf.Memo, event: Mapping[str, Any], body: kopf.Body, indexes: Mapping[str, Any]
) -> None:
    """One watch event of a ScalingPolicy: a new policy gets its loop, a change wakes it."""
    svc = services(memo)
    svc.remember_windows(indexes)
    autoscalers = IndexedAutoscalers(indexes.get(HPA_INDEX), indexes.get(CLAIMS_INDEX))
    schedule = svc.scheduler("ScalingPolicy", new_scheduler)
    feed(schedule, svc, event, body, lambda: ScalingLoop(svc, body, autoscalers))
