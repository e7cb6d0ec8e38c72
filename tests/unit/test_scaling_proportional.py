"""Proportional scale-up (issue 22): the step sized to the load, the cooldown that ends once
the new replicas are measured, and a closed-loop model of a Deployment under a real-ish load
(shared by its ready pods, pods ready a while after they are asked for) run against the engine
and against HPA's algorithm on the same load.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from stronghold_operator.logic import scaling as sc
from stronghold_operator.models.base import parse
from stronghold_operator.models.scaling import ScalingPolicySpec

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def policy(**overrides: Any) -> ScalingPolicySpec:
    spec: dict[str, Any] = {
        "targetRef": {"kind": "Deployment", "name": "web"},
        "minReplicas": 1,
        "maxReplicas": 10,
    }
    spec.update(overrides)
    return parse(ScalingPolicySpec, spec)


def hot(now: datetime, cpu: float, replicas: int) -> list[sc.Sample]:
    return [sc.Sample(now, cpu, 10.0, replicas)]


# --- the step and the cooldown ---------------------------------------------------------------


def test_step_jumps_to_what_the_load_needs() -> None:
    d = sc.decide(policy(), hot(T0, 200, 1), 1, T0)
    assert (d.action, d.to_replicas) == ("ScaleUp", 3)  # ceil(1 x 200 / 80)


def test_step_is_capped_by_max_step_and_max_replicas() -> None:
    assert sc.decide(policy(), hot(T0, 500, 2), 2, T0).to_replicas == 6  # 2 + 4 pods
    d = sc.decide(policy(maxReplicas=5), hot(T0, 500, 2), 2, T0)
    assert (d.to_replicas, d.limited) == (5, "CappedByMax")


def test_cooldown_ends_once_every_new_replica_is_measured() -> None:
    state = sc.ScalingState(last_scale_up=T0)
    now = T0 + timedelta(seconds=20)
    # The 3 replicas of the last step all measured 15 s (one interval) after it.
    d = sc.decide(policy(), [sc.Sample(T0 + timedelta(seconds=15), 100, 10, 3)], 3, now, state)
    assert (d.action, d.to_replicas) == ("ScaleUp", 4)
    assert "cooldown ended" in d.message


def test_cooldown_holds_while_new_replicas_are_unmeasured_or_too_fresh() -> None:
    state = sc.ScalingState(last_scale_up=T0)
    now = T0 + timedelta(seconds=20)
    only_two = [sc.Sample(T0 + timedelta(seconds=15), 100, 10, 2)]
    assert sc.decide(policy(), only_two, 3, now, state).reason == "CoolingDown"
    too_soon = [sc.Sample(T0 + timedelta(seconds=10), 100, 10, 3)]
    assert sc.decide(policy(), too_soon, 3, now, state).reason == "CoolingDown"
    unknown = [sc.Sample(T0 + timedelta(seconds=15), 100, 10)]
    assert sc.decide(policy(), unknown, 3, now, state).reason == "CoolingDown"


def test_full_cooldown_waits_the_whole_cooldown() -> None:
    state = sc.ScalingState(last_scale_up=T0)
    full = policy(scaleUp={"fullCooldown": True})
    measured = [sc.Sample(T0 + timedelta(seconds=15), 100, 10, 3)]
    d = sc.decide(full, measured, 3, T0 + timedelta(seconds=20), state)
    assert d.reason == "CoolingDown"
    later = [sc.Sample(T0 + timedelta(seconds=60), 100, 10, 3)]
    assert sc.decide(full, later, 3, T0 + timedelta(seconds=60), state).action == "ScaleUp"


def test_utilisation_counts_the_replicas_measured() -> None:
    from stronghold_operator.models.scaling import ReplicaUsage

    usage = [ReplicaUsage(f"p{i}", 0.1, 1e8, 0.1, 1e9, T0) for i in range(3)]
    assert sc.utilisation(usage, T0).replicas == 3


# --- properties ------------------------------------------------------------------------------


@st.composite
def bounded_policies(draw: st.DrawFn) -> ScalingPolicySpec:
    lo = draw(st.integers(1, 5))
    hi = draw(st.integers(lo, lo + 20))
    up = draw(st.integers(50, 95))
    return policy(
        minReplicas=lo,
        maxReplicas=hi,
        scaleUp={
            "cpuAbovePercent": up,
            "maxStep": {"pods": draw(st.integers(1, 6)), "percent": draw(st.integers(1, 200))},
            "fullCooldown": draw(st.booleans()),
        },
        scaleDown={"cpuBelowPercent": draw(st.integers(0, up - 1)), "sustainedFor": "0s"},
    )


@settings(max_examples=300, deadline=None)
@given(
    p=bounded_policies(),
    current=st.integers(1, 30),
    cpu=st.floats(0, 1000),
    more=st.floats(0, 1000),
    cooled=st.booleans(),
    measured=st.integers(0, 30),
)
def test_bounded_and_monotone_in_load(
    p: ScalingPolicySpec, current: int, cpu: float, more: float, cooled: bool, measured: int
) -> None:
    state = sc.ScalingState(last_scale_up=T0 - timedelta(seconds=20 if cooled else 3600))

    def to(load: float) -> int:
        return sc.decide(p, [sc.Sample(T0, load, 10, measured)], current, T0, state).to_replicas

    low, high = to(min(cpu, cpu + more)), to(cpu + more)
    for n in (low, high):
        assert p.min_replicas <= n <= p.max_replicas
    assert low <= high
    if p.min_replicas <= current <= p.max_replicas:
        # Never more than the larger of the steps in one decision.
        assert high - current <= sc.step_size(p.scale_up.max_step, current)


# --- closed loop: a Deployment under a load shared by its ready pods --------------------------

REQUEST, LIMIT, TICK = 100.0, 200.0, 15  # millicores per pod; seconds between decisions
STARTUP = 10  # seconds from "scale" to a ready, measured pod


@dataclass
class Cluster:
    """Pods asked for at a time become ready STARTUP seconds later; the load is shared by the
    ready pods, each capped by its limit (as the benchmark's driver shares it)."""

    asked: int
    ready_at: list[int] = field(default_factory=list)

    def ready(self, t: int) -> int:
        return len([r for r in self.ready_at if r <= t])

    def resize(self, n: int, t: int) -> None:
        self.ready_at = sorted(self.ready_at)[:n] + [t + STARTUP] * max(0, n - self.asked)
        self.asked = n

    def cpu_percent(self, load: float, t: int) -> float:
        n = self.ready(t)
        return 100.0 * min(load / n, LIMIT) / REQUEST if n else 0.0


@dataclass
class Run:
    replicas: list[int]  # asked-for count per tick

    def first_at(self, count: int) -> int | None:
        return next((k for k, n in enumerate(self.replicas) if n >= count), None)

    @property
    def replica_minutes(self) -> float:
        return sum(self.replicas) * TICK / 60


def _flaps(replicas: list[int]) -> int:
    """Direction reversals (up after down or down after up)."""
    moves = [b - a for a, b in pairwise(replicas) if b != a]
    return sum(1 for a, b in pairwise(moves) if (a > 0) != (b > 0))


def run_policy(p: ScalingPolicySpec, loads: list[float]) -> Run:
    c, state, kept, out = Cluster(p.min_replicas, [0] * p.min_replicas), sc.ScalingState(), [], []
    for k, load in enumerate(loads):
        t = k * TICK
        now = T0 + timedelta(seconds=t)
        kept = sc.trim([*kept, sc.Sample(now, c.cpu_percent(load, t), 10.0, c.ready(t))], p, now)
        d = sc.decide(p, kept, c.asked, now, state)
        if d.acts:
            c.resize(d.to_replicas, t)
        state = sc.next_state(state, d)
        out.append(c.asked)
    return Run(out)


def run_hpa(lo: int, hi: int, loads: list[float], down_window: int) -> Run:
    """HPA's algorithm (autoscaling/v2 defaults): target 80 %, tolerance 10 %, unready pods
    count as 0 % on the way up, up 4 pods or 100 % per 15 s, down after a stabilization
    window (the highest recommendation in it)."""
    c, recs, out = Cluster(lo, [0] * lo), [], []
    for k, load in enumerate(loads):
        t = k * TICK
        ready = c.ready(t)
        ratio = ready * c.cpu_percent(load, t) / 80 / c.asked if ready else 1.0
        want = c.asked if abs(ratio - 1) <= 0.1 else math.ceil(c.asked * ratio)
        want = min(want, max(c.asked + 4, 2 * c.asked), hi)
        recs = [*recs, max(lo, want)][-(down_window // TICK + 1) :]
        want = max(lo, want) if want > c.asked else max(recs)
        if want != c.asked:
            c.resize(min(want, hi), t)
        out.append(c.asked)
    return Run(out)


def benchmark_loads(high: float, low: float) -> list[float]:
    """The benchmark's phases in ticks: idle, a step, 4 x (45 s high, 45 s low), no load."""
    idle, step, half = [0.0] * 4, [high] * 12, 3
    return idle + step + ([high] * half + [low] * half) * 4 + [0.0] * 20


@settings(max_examples=60, deadline=None)
@given(
    high=st.integers(150, 1200),
    low=st.integers(0, 60),
    hi=st.integers(2, 10),
)
def test_closed_loop_reaches_the_steady_count_no_later_than_hpa_and_never_flaps(
    high: int, low: int, hi: int
) -> None:
    p = policy(maxReplicas=hi, scaleDown={"sustainedFor": "120s", "cooldown": "30s"})
    loads = benchmark_loads(high, low)
    ours, hpa = run_policy(p, loads), run_hpa(1, hi, loads, 120)
    step_end = 4 + 12
    steady, hpa_count = ours.replicas[step_end - 1], hpa.replicas[step_end - 1]
    hpa_steady = hpa.first_at(hpa_count)
    assert hpa_steady is not None
    # At least HPA's count (HPA's 10 % tolerance may stop it one short, at 88 %), reached no
    # later than HPA reaches it; the same count no later than HPA's (ties: the same tick).
    assert steady >= hpa_count
    assert (ours.first_at(hpa_count) or 0) <= hpa_steady
    if steady == hpa_count:
        assert (ours.first_at(steady) or 0) <= hpa_steady
    # The load oscillates faster than sustainedFor: no scale-down, so nothing to flap.
    osc = ours.replicas[step_end - 1 : step_end + 24]
    assert osc == sorted(osc)
    assert _flaps(osc) == 0
    assert max(ours.replicas) <= hi and min(ours.replicas) >= 1


def test_closed_loop_benchmark_load_in_fewer_steps_than_the_fixed_cooldown() -> None:
    loads = benchmark_loads(300, 60)
    base = {"maxReplicas": 4, "scaleDown": {"sustainedFor": "120s", "cooldown": "30s"}}
    early = run_policy(policy(**base), loads)
    full = run_policy(policy(**base, scaleUp={"fullCooldown": True}), loads)
    hpa = run_hpa(1, 4, loads, 120)
    assert early.first_at(4) is not None and full.first_at(4) is not None
    assert hpa.first_at(4) is not None
    # 300m on 1 pod (capped at its 200m limit) -> 3 pods; 100 % each -> 4 one tick later.
    assert early.replicas[4:6] == [3, 4]
    assert (early.first_at(4) or 0) <= (hpa.first_at(4) or 0) < (full.first_at(4) or 0)
    assert _flaps(early.replicas[15:40]) == 0


def test_closed_loop_with_hpas_scale_down_step_costs_no_more_replica_minutes_than_hpa() -> None:
    # scaleDown.maxStep 100 % (HPA's default scale-down policy), the benchmark's settings.
    loads = benchmark_loads(300, 60)
    down = {"sustainedFor": "120s", "cooldown": "30s", "maxStep": {"percent": 100}}
    ours = run_policy(policy(maxReplicas=4, scaleDown=down), loads)
    hpa = run_hpa(1, 4, loads, 120)
    assert ours.replica_minutes <= hpa.replica_minutes
    assert _flaps(ours.replicas) <= _flaps(hpa.replicas)
    assert ours.replicas[-1] == 1
