"""The ScalingPolicy service on in-memory fakes of its ports (services/scaling.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from stronghold_operator.logic import scaling as engine
from stronghold_operator.models.base import parse
from stronghold_operator.models.scaling import (
    VOCABULARY,
    Claim,
    MetricsUnavailableError,
    ReplicaUsage,
    ScalingPolicySpec,
    TargetNotFound,
)
from stronghold_operator.services import scaling as service

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
META = {"name": "p", "namespace": "ns", "uid": "u1", "creationTimestamp": "2026-01-01T00:00:00Z"}


@dataclass
class FakeTarget:
    """A workload whose replicas all report ``cpu`` percent of their requests."""

    replicas: int = 2
    cpu: float | None = 50.0
    clock: FakeClock | None = None
    scaled: list[int] = field(default_factory=list)

    async def read_replicas(self) -> int:
        return self.replicas

    async def read_usage(self) -> list[ReplicaUsage]:
        if self.cpu is None:
            raise MetricsUnavailableError("metrics.k8s.io is not served")
        when = self.clock.now if self.clock else T0
        return [
            ReplicaUsage(f"web-{i}", self.cpu / 100, 10.0, 1.0, 100.0, when)
            for i in range(self.replicas)
        ]

    async def scale(self, replicas: int) -> list[str]:
        self.scaled.append(replicas)
        self.replicas = replicas
        return ["Deployment/web"]


@dataclass
class FakeAutoscalers:
    """HPAs by (namespace, kind, name) of their target; claims by target scope."""

    hpa_names: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)
    claim_list: dict[tuple[str, ...], list[Claim]] = field(default_factory=dict)

    async def hpas(self, namespace: str, kind: str, name: str) -> list[str]:
        return self.hpa_names.get((namespace, kind, name), [])

    async def claims(self, scope: tuple[str, ...]) -> list[Claim]:
        return self.claim_list.get(scope, [])


@dataclass
class FakeClock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


def policy(**extra: Any) -> ScalingPolicySpec:
    raw: dict[str, Any] = {
        "targetRef": {"kind": "Deployment", "name": "web"},
        "maxReplicas": 5,
        "interval": "5s",
        "scaleUp": {"stabilizationWindow": "10s", "maxStep": {"pods": 1}},
    }
    raw.update(extra)
    return parse(ScalingPolicySpec, raw)


def ports(
    target: FakeTarget,
    clock: FakeClock,
    autoscalers: FakeAutoscalers | None = None,
    hold: str | None = None,
) -> service.Ports:
    return service.Ports(target, autoscalers or FakeAutoscalers(), clock, lambda: hold)


def run(p: ScalingPolicySpec, ps: service.Ports, memory: service.Memory) -> service.Pass:
    return asyncio.run(service.reconcile(p, META, ps, memory, {}))


def conditions(result: service.Pass) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in result.status.conditions}


def test_scales_up_once_the_band_is_sustained() -> None:
    clock = FakeClock()
    target = FakeTarget(cpu=95.0, clock=clock)
    memory = service.Memory()
    reasons = []
    for step in range(3):  # 0s, 5s, 10s: the stabilization window is 10s
        clock.now = T0 + timedelta(seconds=5 * step)
        result = run(policy(), ports(target, clock), memory)
        assert result.outcome is not None
        reasons.append(result.outcome.decision.reason)
    assert reasons == [engine.STABILIZING, engine.STABILIZING, engine.CPU_ABOVE]
    assert target.scaled == [3]
    status = result.status.to_status()
    assert status["currentReplicas"] == 3 and status["desiredReplicas"] == 3
    assert status["lastScaleTime"] == "2026-03-01T12:00:10Z"
    assert status["lastDecision"]["action"] == "ScaleUp"
    assert conditions(result)["ScalingActive"] == ("True", "Active")


def test_holds_when_metrics_are_missing() -> None:
    clock = FakeClock()
    target = FakeTarget(cpu=None)
    result = run(policy(), ports(target, clock), service.Memory())
    assert result.outcome is not None and result.outcome.decision.action == engine.HOLD
    assert target.scaled == []
    assert conditions(result)["MetricsAvailable"] == ("False", "MetricsUnavailable")
    assert result.outcome.metrics_error == "metrics.k8s.io is not served"


def test_a_conflicting_autoscaler_is_refused() -> None:
    clock = FakeClock()
    target = FakeTarget(cpu=95.0)
    other_ns = FakeAutoscalers({("elsewhere", "Deployment", "web"): ["web"]})
    p = policy(scaleUp={"stabilizationWindow": "0s"})
    result = run(p, ports(target, clock, other_ns), service.Memory())
    assert conditions(result)["Ready"] == ("True", "Reconciled")  # another namespace's HPA
    target = FakeTarget(cpu=95.0)
    hpa = FakeAutoscalers({("ns", "Deployment", "web"): ["web-hpa"]})
    result = run(p, ports(target, clock, hpa), service.Memory())
    assert conditions(result)["Ready"] == ("False", "ConflictingAutoscaler")
    assert result.outcome is not None
    assert "HorizontalPodAutoscaler web-hpa" in result.outcome.decision.message
    assert target.scaled == []


def test_an_older_policy_of_the_same_target_wins() -> None:
    scope = ("ns", "Deployment", "web")
    mine = Claim("2026-01-01T00:00:00Z", "ns", "p", "u1")  # META's own claim is not a conflict
    older = Claim("2025-01-01T00:00:00Z", "ns", "old", "u0")
    alone = FakeAutoscalers(claim_list={scope: [mine]})
    result = run(policy(), ports(FakeTarget(cpu=95.0), FakeClock(), alone), service.Memory())
    assert conditions(result)["Ready"] == ("True", "Reconciled")
    target = FakeTarget(cpu=95.0)
    lookup = FakeAutoscalers(claim_list={scope: [mine, older]})
    result = run(policy(), ports(target, FakeClock(), lookup), service.Memory())
    assert conditions(result)["Ready"] == ("False", "ConflictingAutoscaler")
    assert result.outcome is not None and "ns/old" in result.outcome.decision.message


def test_dry_run_writes_nothing_to_the_target() -> None:
    target = FakeTarget(cpu=95.0)
    p = policy(dryRun=True, scaleUp={"stabilizationWindow": "0s"})
    result = run(p, ports(target, FakeClock()), service.Memory())
    assert target.scaled == []
    assert result.outcome is not None and result.outcome.decision.reason == engine.DRY_RUN
    assert result.status.desired_replicas == 3 and result.status.current_replicas == 2
    assert conditions(result)["ScalingActive"] == ("False", "DryRun")


def test_a_maintenance_freeze_holds() -> None:
    target = FakeTarget(cpu=95.0)
    p = policy(scaleUp={"stabilizationWindow": "0s"})
    result = run(p, ports(target, FakeClock(), hold="upgrade"), service.Memory())
    assert target.scaled == []
    assert result.outcome is not None and result.outcome.decision.reason == engine.MAINTENANCE
    assert conditions(result)["ScalingActive"] == ("False", "MaintenanceWindow")


def test_a_missing_target_fails_without_scaling() -> None:
    class Gone(FakeTarget):
        async def read_replicas(self) -> int:
            raise TargetNotFound("Deployment web not found")

    result = run(policy(), ports(Gone(), FakeClock()), service.Memory())
    assert result.outcome is None
    assert conditions(result)["Ready"] == ("False", "TargetNotFound")
    # Only conditions: the last known numbers stay in status.
    assert set(result.status.to_status()) == {"conditions"}


def test_every_condition_uses_the_vocabulary() -> None:
    cases = [
        (policy(), FakeTarget(cpu=95.0), None),
        (policy(dryRun=True), FakeTarget(cpu=95.0), None),
        (policy(), FakeTarget(cpu=None), "w"),
        (policy(maxReplicas=2, scaleUp={"stabilizationWindow": "0s"}), FakeTarget(cpu=99.0), None),
    ]
    for p, target, hold in cases:
        result = run(p, ports(target, FakeClock(), hold=hold), service.Memory())
        for c in [*result.status.conditions, *service.initial_status().conditions]:
            assert c.type in VOCABULARY.types and c.reason in VOCABULARY.reasons, c


def test_replica_series_carry_the_policy_bounds() -> None:
    """current, desired, min and max side by side: "how close to maxReplicas" is one PromQL
    division (the stronghold:scaling_replicas:ratio_of_max rule, docs/capacity.md)."""
    from prometheus_client import REGISTRY

    from stronghold_operator.controllers import scaling as controller

    clock = FakeClock()
    target = FakeTarget(cpu=50.0, clock=clock)
    result = run(policy(minReplicas=2), ports(target, clock), service.Memory())
    assert result.outcome is not None
    controller._record_metrics("ns-bounds", "web", result.outcome.decision, policy(minReplicas=2))
    try:
        got = {
            kind: REGISTRY.get_sample_value(
                "stronghold_scaling_replicas",
                {"namespace": "ns-bounds", "policy": "web", "kind": kind},
            )
            for kind in ("current", "desired", "min", "max")
        }
        assert got == {"current": 2.0, "desired": 2.0, "min": 2.0, "max": 5.0}
    finally:
        controller.forget_object(controller.PLURAL, "ns-bounds", "web")
