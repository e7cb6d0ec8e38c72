"""The decision engine, case by case: each reason in the vocabulary, with its numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from stronghold_operator.logic import scaling as sc
from stronghold_operator.models.base import parse
from stronghold_operator.models.scaling import ReplicaUsage, ScalingPolicySpec

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
STEP = timedelta(seconds=15)


def policy(**extra: Any) -> ScalingPolicySpec:
    base: dict[str, Any] = {
        "targetRef": {"kind": "Deployment", "name": "web"},
        "minReplicas": 2,
        "maxReplicas": 10,
    }
    base.update(extra)
    return parse(ScalingPolicySpec, base)


def series(cpu: float, mem: float, minutes: float, end: datetime = T0) -> list[sc.Sample]:
    n = int(timedelta(minutes=minutes) / STEP)
    return [sc.Sample(end - (n - i) * STEP, cpu, mem) for i in range(n + 1)]


def test_cpu_above_scales_up_proportionally() -> None:
    d = sc.decide(policy(), series(120, 30, 1), 4, T0)
    assert (d.action, d.from_replicas, d.to_replicas, d.reason) == ("ScaleUp", 4, 6, sc.CPU_ABOVE)
    assert d.acts and "CPU 120% > 80%" in d.message


def test_memory_alone_triggers_scale_up() -> None:
    d = sc.decide(policy(), series(10, 90, 1), 3, T0)
    assert (d.action, d.to_replicas, d.reason) == ("ScaleUp", 4, sc.MEMORY_ABOVE)


def test_scale_up_is_capped_by_step_and_by_max() -> None:
    p = policy(scaleUp={"maxStep": {"pods": 1}})
    assert sc.decide(p, series(400, 10, 1), 2, T0).to_replicas == 3
    d = sc.decide(policy(), series(400, 10, 1), 8, T0)
    assert d.to_replicas == 10 and d.limited == sc.CAPPED_BY_MAX and "capped" in d.message


def test_at_max_holds_and_says_so() -> None:
    d = sc.decide(policy(), series(95, 10, 1), 10, T0)
    assert (d.action, d.reason, d.limited) == ("Hold", sc.CAPPED_BY_MAX, sc.CAPPED_BY_MAX)


def test_scale_down_needs_both_metrics_below_for_sustained_for() -> None:
    p = policy()
    held = sc.decide(p, series(10, 20, 29), 5, T0)
    assert (held.action, held.reason) == ("Hold", sc.STABILIZING)
    assert held.below_since == T0 - timedelta(minutes=29)
    assert "29m of 30m" in held.message
    d = sc.decide(p, series(10, 20, 30), 5, T0)
    assert (d.action, d.to_replicas, d.reason) == ("ScaleDown", 4, sc.SUSTAINED_BELOW)
    # Memory high (but under its up-band) blocks scale-down even with idle CPU.
    d = sc.decide(p, series(10, 60, 45), 5, T0)
    assert (d.action, d.reason, d.below_since) == ("Hold", sc.WITHIN_BANDS, None)


def test_a_larger_scale_down_step_stops_at_what_the_load_needs() -> None:
    # The guide's one pod per step whatever the load; a 100 % step to min when idle.
    assert sc.decide(policy(), series(0, 5, 30), 8, T0).to_replicas == 7
    wide = policy(scaleDown={"maxStep": {"percent": 100}})
    assert sc.decide(wide, series(0, 5, 30), 8, T0).to_replicas == 2  # minReplicas
    # CPU 39 % on 8: 8 x 39 / 60 (the middle of 40..80) = 5.2 -> 6, not 2 at 156 %.
    assert sc.decide(wide, series(39, 5, 30), 8, T0).to_replicas == 6
    # Memory is the hotter one: 8 x 45 / 67.5 (the middle of 50..85) = 5.33 -> 6.
    assert sc.decide(wide, series(10, 45, 30), 8, T0).to_replicas == 6
    # Where the load needs every pod, the step is still the guide's one pod.
    assert sc.decide(wide, series(39, 5, 30), 3, T0).to_replicas == 2


def test_a_gap_in_the_observations_restarts_the_timer() -> None:
    p = policy()
    samples = series(10, 20, 40)
    gap = [
        s for s in samples if not (T0 - timedelta(minutes=20) < s.time < T0 - timedelta(minutes=16))
    ]
    d = sc.decide(p, gap, 5, T0)
    assert d.action == "Hold" and d.below_since == T0 - timedelta(minutes=16)


def test_below_since_carries_over_a_restart_only_without_a_gap() -> None:
    p = policy()
    fresh = series(10, 20, 5)  # the operator restarted five minutes ago
    joined = sc.ScalingState(
        below_since=T0 - timedelta(minutes=40), last_observed=fresh[0].time - STEP
    )
    assert sc.decide(p, fresh, 5, T0, joined).action == "ScaleDown"
    late = sc.ScalingState(
        below_since=T0 - timedelta(minutes=40), last_observed=fresh[0].time - timedelta(minutes=10)
    )
    d = sc.decide(p, fresh, 5, T0, late)
    assert d.action == "Hold" and d.below_since == fresh[0].time


def test_at_min_holds() -> None:
    d = sc.decide(policy(), series(5, 5, 60), 2, T0)
    assert (d.action, d.reason, d.limited) == ("Hold", sc.AT_MIN, sc.AT_MIN)


def test_missing_or_stale_metrics_hold_and_never_drop() -> None:
    p = policy()
    assert sc.decide(p, [], 5, T0).reason == sc.METRICS_UNAVAILABLE
    stale = series(5, 5, 60, end=T0 - timedelta(minutes=3))
    d = sc.decide(p, stale, 5, T0)
    assert (d.action, d.reason, d.metrics_available) == ("Hold", sc.METRICS_UNAVAILABLE, False)
    assert "3m0s old" in d.message or "3m old" in d.message
    partial = [*series(5, 5, 60)[:-1], sc.Sample(T0, 5, None)]
    assert sc.decide(p, partial, 5, T0).reason == sc.METRICS_UNAVAILABLE


def test_cooldowns() -> None:
    p = policy(scaleUp={"cooldown": "2m"}, scaleDown={"cooldown": "10m", "sustainedFor": "5m"})
    st = sc.ScalingState(last_scale_up=T0 - timedelta(minutes=1))
    d = sc.decide(p, series(99, 10, 1), 3, T0, st)
    assert (d.action, d.reason) == ("Hold", sc.COOLING_DOWN) and "1m left" in d.message
    # A scale-up also delays the next scale-down by the scale-down cooldown.
    st = sc.ScalingState(last_scale_up=T0 - timedelta(minutes=8))
    assert sc.decide(p, series(5, 5, 6), 3, T0, st).reason == sc.COOLING_DOWN
    st = sc.ScalingState(last_scale_up=T0 - timedelta(minutes=11))
    assert sc.decide(p, series(5, 5, 6), 3, T0, st).action == "ScaleDown"


def test_stabilization_window_for_scale_up() -> None:
    p = policy(scaleUp={"stabilizationWindow": "1m"})
    samples = [*series(50, 10, 5, end=T0 - STEP * 3), *series(95, 10, 0.5)]
    assert sc.decide(p, samples, 3, T0).reason == sc.STABILIZING
    assert sc.decide(p, series(95, 10, 1), 3, T0).action == "ScaleUp"


def test_gates_in_order() -> None:
    hot = series(99, 99, 1)
    assert sc.decide(policy(), hot, 3, T0, conflict="HPA web").reason == sc.CONFLICTING
    assert sc.decide(policy(), hot, 3, T0, maintenance="db").reason == sc.MAINTENANCE
    assert sc.decide(policy(paused=True), hot, 3, T0).reason == sc.PAUSED
    until = (T0 + timedelta(minutes=5)).isoformat()
    d = sc.decide(policy(pausedUntil=until), hot, 3, T0)
    assert d.reason == sc.PAUSED and "until" in d.message and not d.acts
    t6 = T0 + timedelta(minutes=6)
    later = sc.decide(policy(pausedUntil=until), series(99, 99, 1, end=t6), 3, t6)
    assert later.action == "ScaleUp"


def test_dry_run_decides_but_never_acts() -> None:
    d = sc.decide(policy(dryRun=True), series(99, 10, 1), 3, T0)
    assert (d.action, d.to_replicas, d.reason) == ("ScaleUp", 4, sc.DRY_RUN)
    assert not d.acts and d.message.startswith("dry run: would scale up 3 -> 4")
    assert sc.next_state(sc.ScalingState(), d).last_scale_up is None


def test_out_of_bounds_replicas_return_to_bounds() -> None:
    d = sc.decide(policy(), series(50, 50, 1), 14, T0)
    assert (d.action, d.to_replicas, d.reason) == ("ScaleDown", 10, sc.CAPPED_BY_MAX)
    d = sc.decide(policy(), [], 1, T0)
    assert (d.action, d.to_replicas, d.reason) == ("ScaleUp", 2, sc.AT_MIN)


def test_within_bands_holds() -> None:
    d = sc.decide(policy(), series(60, 60, 5), 4, T0)
    assert (d.action, d.reason, d.to_replicas) == ("Hold", sc.WITHIN_BANDS, 4)


def test_utilisation_averages_over_the_basis() -> None:
    reps = [
        ReplicaUsage("a", 0.2, 50e6, 0.1, 100e6, T0),
        ReplicaUsage("b", 0.0, 50e6, 0.1, 100e6, T0 - STEP),
    ]
    s = sc.utilisation(reps, T0)
    assert s.cpu_percent == 100.0 and s.memory_percent == 50.0 and s.time == T0 - STEP
    assert not sc.utilisation([], T0).complete


def test_trim_keeps_enough_history() -> None:
    p = policy(scaleDown={"sustainedFor": "10m"})
    kept = sc.trim(series(10, 10, 60), p, T0)
    assert kept[0].time >= T0 - sc.keep_window(p)
    assert kept[-1].time == T0
    # sustainedFor is carried by ScalingState, not by the history (see test_scaling_bounds).
    assert len(kept) <= sc.MAX_SAMPLES
