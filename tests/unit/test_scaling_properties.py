"""Properties of the decision engine, checked on simulated load histories (hypothesis).

Each example is a policy and a load trace; :func:`simulate` drives the engine tick by tick
the way the handler does (append, trim, decide, act, remember) and the properties are checked
against the full, untrimmed history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from stronghold_operator.logic import scaling as sc
from stronghold_operator.models.base import parse
from stronghold_operator.models.scaling import ScalingPolicySpec

T0 = datetime(2026, 3, 1, tzinfo=UTC)
TICK = timedelta(seconds=15)

# One tick's observation: None = no sample at all; a field None = that metric missing.
Obs = tuple[float | None, float | None] | None


@dataclass
class Tick:
    now: datetime
    replicas_before: int
    decision: sc.Decision


def simulate(
    policy: ScalingPolicySpec, trace: list[Obs], replicas: int, **gates: Any
) -> tuple[list[Tick], list[sc.Sample]]:
    state = sc.ScalingState()
    kept: list[sc.Sample] = []
    everything: list[sc.Sample] = []
    ticks: list[Tick] = []
    for k, obs in enumerate(trace):
        now = T0 + k * TICK
        if obs is not None:
            sample = sc.Sample(now, obs[0], obs[1])
            kept.append(sample)
            everything.append(sample)
        kept = sc.trim(kept, policy, now)
        d = sc.decide(policy, kept, replicas, now, state, **gates)
        ticks.append(Tick(now, replicas, d))
        if d.acts:
            replicas = d.to_replicas
        state = sc.next_state(state, d)
    return ticks, everything


@st.composite
def policies(draw: st.DrawFn, **fixed: Any) -> ScalingPolicySpec:
    lo = draw(st.integers(1, 5))
    hi = draw(st.integers(lo, lo + 8))
    raw: dict[str, Any] = {
        "targetRef": {"kind": "Deployment", "name": "web"},
        "minReplicas": lo,
        "maxReplicas": hi,
        "scaleUp": {
            "maxStep": draw(
                st.sampled_from(
                    [{"pods": 1}, {"pods": 3}, {"percent": 50}, {"pods": 2, "percent": 100}]
                )
            ),
            "cooldown": f"{draw(st.integers(0, 5))}m",
            "stabilizationWindow": f"{draw(st.sampled_from([0, 15, 45]))}s",
        },
        "scaleDown": {
            "maxStep": draw(st.sampled_from([{"pods": 1}, {"pods": 2}, {"percent": 50}])),
            "cooldown": f"{draw(st.integers(0, 5))}m",
            "sustainedFor": f"{draw(st.integers(1, 8))}m",
        },
        "metrics": {"maxAge": f"{draw(st.sampled_from([20, 60]))}s"},
    }
    raw.update(fixed)
    return parse(ScalingPolicySpec, raw)


percent = st.floats(0, 300, allow_nan=False)
observation: st.SearchStrategy[Obs] = st.one_of(
    st.none(),
    st.tuples(st.none() | percent, st.none() | percent),
    st.tuples(percent, percent),
    st.tuples(percent, percent),
)
# Long quiet stretches as well as noise, so scale-downs actually happen in the examples.
quiet = st.lists(st.just((5.0, 5.0)), min_size=0, max_size=60)
traces = st.lists(st.one_of(st.lists(observation, max_size=10), quiet), max_size=12).map(
    lambda chunks: [o for c in chunks for o in c]
)


def run_below_start(
    samples: list[sc.Sample], policy: ScalingPolicySpec, now: datetime
) -> datetime | None:
    """Independent restatement: start of the trailing gap-free run of below-both samples."""
    since = None
    prev: sc.Sample | None = None
    for s in samples:
        if s.time > now:
            break
        below = sc.is_below(policy, s)
        contiguous = prev is not None and s.time - prev.time <= policy.metrics.max_age
        if below and since is not None and contiguous:
            pass
        elif below:
            since = s.time
        else:
            since = None
        prev = s
    if prev is None or now - prev.time > policy.metrics.max_age:
        return None
    return since


@settings(max_examples=150, deadline=None)
@given(policy=policies(), trace=traces, start=st.integers(0, 4))
def test_replicas_never_leave_bounds(
    policy: ScalingPolicySpec, trace: list[Obs], start: int
) -> None:
    replicas = (
        policy.min_replicas + start
        if start <= policy.max_replicas - policy.min_replicas
        else policy.max_replicas
    )
    ticks, _ = simulate(policy, trace, replicas)
    for t in ticks:
        assert policy.min_replicas <= t.replicas_before <= policy.max_replicas
        assert policy.min_replicas <= t.decision.to_replicas <= policy.max_replicas
        assert t.decision.action != "Hold" or t.decision.to_replicas == t.replicas_before


@settings(max_examples=150, deadline=None)
@given(policy=policies(), trace=traces)
def test_no_scale_down_before_sustained_for(policy: ScalingPolicySpec, trace: list[Obs]) -> None:
    ticks, everything = simulate(policy, trace, policy.max_replicas)
    for t in ticks:
        if t.decision.action != "ScaleDown":
            continue
        since = run_below_start(everything, policy, t.now)
        assert since is not None, "scaled down without a current below-both run"
        assert t.now - since >= policy.scale_down.sustained_for
        # Every sample in the window is below both bands.
        window = [
            s for s in everything if t.now - policy.scale_down.sustained_for <= s.time <= t.now
        ]
        assert window and all(sc.is_below(policy, s) for s in window)


@settings(max_examples=150, deadline=None)
@given(policy=policies(), trace=traces)
def test_steps_and_cooldowns(policy: ScalingPolicySpec, trace: list[Obs]) -> None:
    ticks, _ = simulate(policy, trace, policy.min_replicas)
    last_up: datetime | None = None
    last_any: datetime | None = None
    for t in ticks:
        d = t.decision
        if d.action == "ScaleUp":
            assert d.to_replicas - d.from_replicas <= sc.step_size(
                policy.scale_up.max_step, d.from_replicas
            )
            if last_up is not None:
                assert t.now - last_up >= policy.scale_up.cooldown
            last_up = last_any = t.now
        elif d.action == "ScaleDown":
            assert d.from_replicas - d.to_replicas <= sc.step_size(
                policy.scale_down.max_step, d.from_replicas
            )
            if last_any is not None:
                assert t.now - last_any >= policy.scale_down.cooldown
            last_any = t.now


@settings(max_examples=150, deadline=None)
@given(policy=policies(), trace=traces)
def test_missing_metrics_hold(policy: ScalingPolicySpec, trace: list[Obs]) -> None:
    ticks, everything = simulate(policy, trace, policy.max_replicas)
    by_time = {s.time: s for s in everything}
    for t in ticks:
        latest = [s for s in everything if s.time <= t.now]
        fresh = latest and latest[-1].complete and t.now - latest[-1].time <= policy.metrics.max_age
        if not fresh:
            assert t.decision.action == "Hold"
            assert t.decision.reason == sc.METRICS_UNAVAILABLE
            assert not t.decision.metrics_available
        if t.now not in by_time:
            assert t.decision.action != "ScaleDown" or fresh


@settings(max_examples=100, deadline=None)
@given(
    policy=policies(),
    high=st.floats(85, 300),
    low=st.floats(0, 39),
    half_period=st.integers(1, 20),
    cycles=st.integers(2, 8),
)
def test_oscillating_load_does_not_flap(
    policy: ScalingPolicySpec, high: float, low: float, half_period: int, cycles: int
) -> None:
    # Load swings between hot and idle faster than sustainedFor: capacity may grow, never shrink.
    if half_period * TICK >= policy.scale_down.sustained_for:
        half_period = max(1, int(policy.scale_down.sustained_for / TICK) - 1)
    trace: list[Obs] = []
    for _ in range(cycles):
        trace += [(high, 10.0)] * half_period + [(low, 10.0)] * half_period
    ticks, _ = simulate(policy, trace, policy.min_replicas)
    actions = [t.decision.action for t in ticks if t.decision.acts]
    assert "ScaleDown" not in actions
    counts = [t.replicas_before for t in ticks]
    assert counts == sorted(counts)


@settings(max_examples=100, deadline=None)
@given(
    policy=st.one_of(
        policies(dryRun=True),
        policies(paused=True),
        policies(pausedUntil=(T0 + timedelta(days=1)).isoformat()),
    ),
    trace=traces,
    start=st.integers(0, 20),
)
def test_dry_run_and_pause_never_act(
    policy: ScalingPolicySpec, trace: list[Obs], start: int
) -> None:
    ticks, _ = simulate(policy, trace, start)
    assert all(not t.decision.acts for t in ticks)
    assert all(t.replicas_before == start for t in ticks)
    if policy.dry_run:
        assert all(t.decision.action == "Hold" or t.decision.reason == sc.DRY_RUN for t in ticks)
    else:
        assert all(t.decision.reason == sc.PAUSED for t in ticks)


@settings(max_examples=50, deadline=None)
@given(policy=policies(), trace=traces, which=st.sampled_from(["maintenance", "conflict"]))
def test_maintenance_and_conflicts_freeze(
    policy: ScalingPolicySpec, trace: list[Obs], which: str
) -> None:
    ticks, _ = simulate(policy, trace, policy.max_replicas, **{which: "x"})
    assert all(t.decision.action == "Hold" for t in ticks)
    expected = sc.MAINTENANCE if which == "maintenance" else sc.CONFLICTING
    assert all(t.decision.reason == expected for t in ticks)
