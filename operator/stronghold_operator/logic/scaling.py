"""The ScalingPolicy decision engine: a pure function of policy, observations, replicas, now.

Rules, in the order they are applied (the first that applies decides):

1. another autoscaler manages the target      -> Hold, ConflictingAutoscaler
2. the policy carries the maintenance annotation -> Hold, MaintenanceWindow
3. ``paused``, ``pausedUntil`` or the paused-until annotation in the future -> Hold, Paused
4. current replicas outside [min, max]           -> straight back into bounds (CappedByMax/AtMin)
5. the newest observation is missing or stale    -> Hold, MetricsUnavailable (never scale down)
6. CPU above its up-band OR memory above its band -> ScaleUp (unless at max, stabilizing,
   cooling down); proportionally, capped by the step and by max. The up-cooldown ends early
   once every replica of the last scale-up has been measured (unless ``fullCooldown``)
7. CPU below its down-band AND memory below its band, both for the whole ``sustainedFor``
   without a gap in the observations -> ScaleDown by at most the step (unless at min, cooling
   down); a step larger than one pod stops at what the load needs at the bands' middle
8. otherwise                                     -> Hold, WithinBands

``dryRun`` keeps the decision but marks it with reason DryRun; such a decision never acts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from stronghold_operator.models.scaling import (
    PAUSED_UNTIL_ANNOTATION,
    ReplicaUsage,
    ScalingPolicySpec,
    Step,
)

Action = Literal["ScaleUp", "ScaleDown", "Hold"]
SCALE_UP: Action = "ScaleUp"
SCALE_DOWN: Action = "ScaleDown"
HOLD: Action = "Hold"

# Reasons recorded in status.lastDecision.reason (and in Events and metrics).
CPU_ABOVE = "CpuAboveThreshold"
MEMORY_ABOVE = "MemoryAboveThreshold"
SUSTAINED_BELOW = "SustainedBelowThresholds"
STABILIZING = "Stabilizing"
COOLING_DOWN = "CoolingDown"
CAPPED_BY_MAX = "CappedByMax"
AT_MIN = "AtMin"
PAUSED = "Paused"
DRY_RUN = "DryRun"
MAINTENANCE = "MaintenanceWindow"
METRICS_UNAVAILABLE = "MetricsUnavailable"
CONFLICTING = "ConflictingAutoscaler"
WITHIN_BANDS = "WithinBands"  # the quiet steady state: between the bands

REASONS = (
    CPU_ABOVE,
    MEMORY_ABOVE,
    SUSTAINED_BELOW,
    STABILIZING,
    COOLING_DOWN,
    CAPPED_BY_MAX,
    AT_MIN,
    PAUSED,
    DRY_RUN,
    MAINTENANCE,
    METRICS_UNAVAILABLE,
    CONFLICTING,
    WITHIN_BANDS,
)


@dataclass(frozen=True)
class Sample:
    """One observation of the target's average utilisation (percent of the basis)."""

    time: datetime
    cpu_percent: float | None
    memory_percent: float | None
    # How many replicas reported usage (0: unknown, which never ends a cooldown early).
    replicas: int = 0

    @property
    def complete(self) -> bool:
        return self.cpu_percent is not None and self.memory_percent is not None


@dataclass(frozen=True)
class ScalingState:
    """What the engine remembers between decisions (kept in status, so restarts keep it)."""

    last_scale_up: datetime | None = None
    last_scale_down: datetime | None = None
    below_since: datetime | None = None  # verified up to last_observed
    last_observed: datetime | None = None
    # Like below_since, for the stabilization window; kept in memory only (a restart
    # restarts stabilization, which only delays a scale-up).
    above_since: datetime | None = None

    @property
    def last_scale(self) -> datetime | None:
        times = [t for t in (self.last_scale_up, self.last_scale_down) if t is not None]
        return max(times) if times else None


@dataclass(frozen=True)
class Decision:
    action: Action
    from_replicas: int
    to_replicas: int
    reason: str
    message: str
    time: datetime
    below_since: datetime | None = None
    cpu_percent: float | None = None
    memory_percent: float | None = None
    observed_at: datetime | None = None
    metrics_available: bool = False
    # "CappedByMax"/"AtMin" when the load asks for more/less than the bounds allow.
    limited: str | None = None
    above_since: datetime | None = None

    @property
    def acts(self) -> bool:
        """Whether the handler changes the replica count (never for Hold or a dry run)."""
        return (
            self.action != HOLD
            and self.reason != DRY_RUN
            and self.to_replicas != (self.from_replicas)
        )


def utilisation(replicas: Sequence[ReplicaUsage], now: datetime) -> Sample:
    """Average utilisation across replicas: total usage over total basis (as HPA averages).

    The sample is as old as its oldest measurement, so one stale replica makes it stale.
    """
    cpu_basis = sum(r.cpu_basis_cores for r in replicas)
    mem_basis = sum(r.memory_basis_bytes for r in replicas)
    if not replicas or cpu_basis <= 0 or mem_basis <= 0:
        return Sample(now, None, None)
    cpu = 100.0 * sum(r.cpu_cores for r in replicas) / cpu_basis
    mem = 100.0 * sum(r.memory_bytes for r in replicas) / mem_basis
    return Sample(min(now, *(r.timestamp for r in replicas)), cpu, mem, len(replicas))


def is_above(policy: ScalingPolicySpec, s: Sample) -> bool:
    up = policy.scale_up
    return s.complete and (
        (s.cpu_percent or 0.0) > up.cpu_above_percent
        or (s.memory_percent or 0.0) > up.memory_above_percent
    )


def is_below(policy: ScalingPolicySpec, s: Sample) -> bool:
    down = policy.scale_down
    return (
        s.cpu_percent is not None
        and s.memory_percent is not None
        and s.cpu_percent < down.cpu_below_percent
        and s.memory_percent < down.memory_below_percent
    )


def _run_start(samples: Sequence[Sample], ok: list[bool], max_gap: timedelta) -> int | None:
    """Index where the trailing run of ``ok`` samples without a gap > max_gap begins."""
    if not samples or not ok[-1]:
        return None
    i = len(samples) - 1
    while i > 0 and ok[i - 1] and samples[i].time - samples[i - 1].time <= max_gap:
        i -= 1
    return i


def _joined_run(
    samples: Sequence[Sample],
    ok: list[bool],
    max_gap: timedelta,
    remembered: datetime | None,
    state: ScalingState,
) -> datetime | None:
    start = _run_start(samples, ok, max_gap)
    if start is None:
        return None
    since = samples[start].time
    if (
        start == 0
        and remembered is not None
        and state.last_observed is not None
        and remembered <= since
        and samples[0].time - state.last_observed <= max_gap
    ):
        since = remembered
    return since


def below_since(
    policy: ScalingPolicySpec, samples: Sequence[Sample], state: ScalingState
) -> datetime | None:
    """Since when both metrics have been below their down-bands, with no gap in between.

    A missing or late observation breaks the run: nothing proves the load stayed low. The
    previous value (from status) extends the run only when the remembered run joins the
    current history without a gap, which carries the timer across operator restarts and
    lets the history stay short however long ``sustainedFor`` is.
    """
    ok = [is_below(policy, s) for s in samples]
    return _joined_run(samples, ok, policy.metrics.max_age, state.below_since, state)


def above_since(
    policy: ScalingPolicySpec, samples: Sequence[Sample], state: ScalingState | None = None
) -> datetime | None:
    """Since when a metric has been above its up-band, with no gap (joined like below_since)."""
    state = state or ScalingState()
    ok = [is_above(policy, s) for s in samples]
    return _joined_run(samples, ok, policy.metrics.max_age, state.above_since, state)


def step_size(step: Step, current: int) -> int:
    """The larger of the absolute and the relative limit, at least one replica."""
    by_pods = step.pods or 0
    by_percent = math.ceil(current * step.percent / 100) if step.percent else 0
    return max(1, by_pods, by_percent)


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0f}%"


def _fmt_td(td: timedelta) -> str:
    secs = max(0, int(td.total_seconds()))
    h, rest = divmod(secs, 3600)
    m, s = divmod(rest, 60)
    out = (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{s}s" if s or not (h or m) else "")
    return out


def pause_request(value: str | None) -> datetime | None:
    """The paused-until annotation's time; None when absent. ``ValueError`` naming the
    annotation when it is not an RFC 3339 time with an offset (a typo must not pause for ever
    nor be silently ignored: the service reports it and holds)."""
    if value is None or not value.strip():
        return None
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        when = None
    if when is None or when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(
            f"annotation {PAUSED_UNTIL_ANNOTATION}={value!r} is not an RFC 3339 time with an "
            "offset, such as 2026-03-01T14:00:00Z"
        )
    return when


def paused_until(
    policy: ScalingPolicySpec, annotated: datetime | None, now: datetime
) -> datetime | None:
    """The end of the time-limited pause in force at ``now``: the later of spec.pausedUntil
    and the annotation, if it is in the future (``spec.paused`` has no end)."""
    ends = [t for t in (policy.paused_until, annotated) if t is not None and now < t]
    return max(ends) if ends else None


def decide(
    policy: ScalingPolicySpec,
    samples: Sequence[Sample],
    current: int,
    now: datetime,
    state: ScalingState | None = None,
    *,
    maintenance: str | None = None,
    conflict: str | None = None,
    paused: datetime | None = None,
) -> Decision:
    """Decide what to do now. ``samples`` are oldest first; ``current`` the replicas now;
    ``paused`` the time in the paused-until annotation (see :func:`pause_request`)."""
    turn = _Turn.observe(policy, samples, current, now, state or ScalingState())
    held = _hold_by_request(turn, maintenance, conflict, paused)
    if held is not None:
        return held
    lo, hi = policy.min_replicas, policy.max_replicas
    if current > hi:
        return turn.scale(SCALE_DOWN, hi, CAPPED_BY_MAX, f"above maxReplicas {hi}", CAPPED_BY_MAX)
    if current < lo:
        return turn.scale(SCALE_UP, lo, AT_MIN, f"below minReplicas {lo}", AT_MIN)
    latest = samples[-1] if samples else None
    if latest is None or not turn.base.metrics_available:
        return turn.hold(METRICS_UNAVAILABLE, f"holding at {current}: {_stale(latest, now)}")
    if is_above(policy, latest):
        return _scale_up(turn)
    if is_below(policy, latest) and turn.base.below_since is not None:
        return _scale_down(turn, turn.base.below_since)
    load = f"CPU {_pct(turn.base.cpu_percent)}, memory {_pct(turn.base.memory_percent)}"
    return turn.hold(WITHIN_BANDS, f"{load}: within the bands, holding at {current}")


@dataclass(frozen=True)
class _Turn:
    """One decision in the making: its inputs and the Hold it starts from."""

    policy: ScalingPolicySpec
    state: ScalingState
    base: Decision
    latest: Sample | None = None

    @classmethod
    def observe(
        cls,
        policy: ScalingPolicySpec,
        samples: Sequence[Sample],
        current: int,
        now: datetime,
        state: ScalingState,
    ) -> _Turn:
        latest = samples[-1] if samples else None
        fresh = (
            latest is not None
            and latest.complete
            # A sample slightly from the future is clock skew (metrics server vs operator), not age.
            and now - latest.time <= policy.metrics.max_age
        )
        base = Decision(
            action=HOLD,
            from_replicas=current,
            to_replicas=current,
            reason=WITHIN_BANDS,
            message="",
            time=now,
            below_since=below_since(policy, samples, state) if fresh else None,
            cpu_percent=latest.cpu_percent if fresh and latest else None,
            memory_percent=latest.memory_percent if fresh and latest else None,
            observed_at=latest.time if fresh and latest else state.last_observed,
            metrics_available=fresh,
            above_since=above_since(policy, samples, state) if fresh else None,
        )
        return cls(policy, state, base, latest if fresh else None)

    @property
    def current(self) -> int:
        return self.base.from_replicas

    @property
    def now(self) -> datetime:
        return self.base.time

    def hold(self, reason: str, message: str, limited: str | None = None) -> Decision:
        return replace(self.base, reason=reason, message=message, limited=limited)

    def scale(
        self, action: Action, to: int, reason: str, message: str, limited: str | None = None
    ) -> Decision:
        verb = "scale up" if action == SCALE_UP else "scale down"
        if self.policy.dry_run:
            message = f"dry run: would {verb} {self.current} -> {to}: {message}"
            reason = DRY_RUN
        else:
            message = f"{verb} {self.current} -> {to}: {message}"
        return replace(
            self.base,
            action=action,
            to_replicas=to,
            reason=reason,
            message=message,
            limited=limited,
        )


def _hold_by_request(
    turn: _Turn, maintenance: str | None, conflict: str | None, paused: datetime | None
) -> Decision | None:
    """Rules 1-3: someone asked the engine to keep its hands off."""
    policy, now = turn.policy, turn.now
    if conflict:
        return turn.hold(CONFLICTING, f"not scaling: {conflict}")
    if maintenance:
        return turn.hold(MAINTENANCE, f"scaling frozen for maintenance window {maintenance!r}")
    if policy.paused:
        return turn.hold(PAUSED, "paused (spec.paused)")
    until = paused_until(policy, paused, now)
    if until is not None:
        by = "annotation " + PAUSED_UNTIL_ANNOTATION if until == paused else "spec.pausedUntil"
        return turn.hold(PAUSED, f"paused until {until.isoformat()} ({by})")
    return None


def _stale(latest: Sample | None, now: datetime) -> str:
    """Why the newest observation cannot be used."""
    if latest is None:
        return "no observation yet"
    if not latest.complete:
        return "CPU or memory utilisation is not reported"
    return f"newest observation is {_fmt_td(now - latest.time)} old"


def measured_since(
    policy: ScalingPolicySpec, latest: Sample | None, current: int, last_up: datetime
) -> bool:
    """Whether ``latest`` already shows the size the last scale-up made: every one of
    ``current`` replicas reported, all measured one ``interval`` or more after it.

    Then the load still above the band is a fact about the new size, and waiting out the rest
    of ``scaleUp.cooldown`` only delays capacity (HPA acts every 15 s). Flapping is prevented
    on the way down (``sustainedFor``), not here.
    """
    return (
        not policy.scale_up.full_cooldown
        and latest is not None
        and latest.replicas >= current
        and latest.time - last_up >= policy.interval
    )


def _scale_up(turn: _Turn) -> Decision:
    """Rule 6: a metric is above its up-band."""
    up, hi, current, now = turn.policy.scale_up, turn.policy.max_replicas, turn.current, turn.now
    cpu, mem = turn.base.cpu_percent, turn.base.memory_percent
    assert cpu is not None and mem is not None
    cpu_ratio, mem_ratio = cpu / up.cpu_above_percent, mem / up.memory_above_percent
    reason = CPU_ABOVE if cpu_ratio >= mem_ratio else MEMORY_ABOVE
    why = (
        f"CPU {_pct(cpu)} > {up.cpu_above_percent:g}%"
        if reason == CPU_ABOVE
        else f"memory {_pct(mem)} > {up.memory_above_percent:g}%"
    )
    if current >= hi:
        return turn.hold(CAPPED_BY_MAX, f"{why} but already at maxReplicas {hi}", CAPPED_BY_MAX)
    started = turn.base.above_since
    if started is not None and now - started < up.stabilization:
        return turn.hold(
            STABILIZING, f"{why} for {_fmt_td(now - started)} of {_fmt_td(up.stabilization)}"
        )
    last_up = turn.state.last_scale_up
    if last_up is not None and now - last_up < up.cooldown:
        if not measured_since(turn.policy, turn.latest, current, last_up):
            left = up.cooldown - (now - last_up)
            return turn.hold(COOLING_DOWN, f"{why}; scale-up cooldown has {_fmt_td(left)} left")
        why += f"; all {current} replicas measured since the last scale-up, cooldown ended"
    # Enough replicas to bring the hotter metric back to its band, as HPA sizes.
    wanted = max(current + 1, math.ceil(current * max(cpu_ratio, mem_ratio) - 1e-9))
    stepped = min(wanted, current + step_size(up.max_step, current))
    limited = CAPPED_BY_MAX if wanted > hi else None
    note = f" (wanted {wanted}, capped by maxReplicas {hi})" if limited else ""
    return turn.scale(SCALE_UP, min(stepped, hi), reason, why + note, limited)


def _scale_down(turn: _Turn, since: datetime) -> Decision:
    """Rule 7: both metrics below their down-bands since ``since``."""
    down, lo, current, now = (
        turn.policy.scale_down,
        turn.policy.min_replicas,
        turn.current,
        turn.now,
    )
    why = (
        f"CPU {_pct(turn.base.cpu_percent)} < {down.cpu_below_percent:g}% and memory "
        f"{_pct(turn.base.memory_percent)} < {down.memory_below_percent:g}% "
        f"for {_fmt_td(now - since)}"
    )
    if current <= lo:
        return turn.hold(AT_MIN, f"{why}; already at minReplicas {lo}", AT_MIN)
    if now - since < down.sustained_for:
        return turn.hold(STABILIZING, f"{why} of {_fmt_td(down.sustained_for)}")
    last = turn.state.last_scale
    if last is not None and now - last < down.cooldown:
        left = down.cooldown - (now - last)
        return turn.hold(COOLING_DOWN, f"{why}; scale-down cooldown has {_fmt_td(left)} left")
    # One pod per step is the guide's; a larger maxStep goes no lower than the load needs.
    stepped = current - step_size(down.max_step, current)
    to = max(lo, min(current - 1, max(stepped, _needed_at_midband(turn))))
    return turn.scale(SCALE_DOWN, to, SUSTAINED_BELOW, why)


def _needed_at_midband(turn: _Turn) -> int:
    """Replicas that keep the hotter metric at the middle of its bands after a scale-down
    (HPA sizes to its target; the middle keeps a step down from landing near the up-band)."""
    up, down = turn.policy.scale_up, turn.policy.scale_down
    cpu, mem = turn.base.cpu_percent or 0.0, turn.base.memory_percent or 0.0
    mid_cpu = (up.cpu_above_percent + down.cpu_below_percent) / 2
    mid_mem = (up.memory_above_percent + down.memory_below_percent) / 2
    return math.ceil(turn.current * max(cpu / mid_cpu, mem / mid_mem) - 1e-9)


def next_state(state: ScalingState, decision: Decision) -> ScalingState:
    """The memory after ``decision`` was carried out (dry runs and holds change no times)."""
    up, down = state.last_scale_up, state.last_scale_down
    if decision.acts and decision.action == SCALE_UP:
        up = decision.time
    elif decision.acts and decision.action == SCALE_DOWN:
        down = decision.time
    return ScalingState(
        last_scale_up=up,
        last_scale_down=down,
        below_since=decision.below_since,
        last_observed=decision.observed_at,
        above_since=decision.above_since,
    )


# The most samples one policy keeps. The runs behind stabilizationWindow and sustainedFor
# are carried by ScalingState (joined to the history), so a short history decides exactly
# as the full one would, and memory does not grow with sustainedFor (docs/performance.md).
MAX_SAMPLES = 64


def keep_window(policy: ScalingPolicySpec) -> timedelta:
    """How much history the engine needs (the runs are carried by :class:`ScalingState`)."""
    return 2 * max(policy.interval, policy.metrics.max_age)


def trim(samples: Sequence[Sample], policy: ScalingPolicySpec, now: datetime) -> list[Sample]:
    """The samples to keep: those within keep_window, at most MAX_SAMPLES (the newest)."""
    keep = keep_window(policy)
    return [s for s in samples if now - s.time <= keep][-MAX_SAMPLES:]
