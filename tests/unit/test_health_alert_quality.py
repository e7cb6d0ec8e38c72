"""Alert quality: ratios judged on the interval's sample (deltas, resets, a minimum) and
flap damping (one incident while a check oscillates)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stronghold_operator.logic import health as h
from stronghold_operator.logic.health import damping, samples
from stronghold_operator.logic.health.samples import SampleRule
from stronghold_operator.models.base import InvalidSpec, parse
from stronghold_operator.models.health import HealthPolicySpec
from stronghold_operator.probes.base import ProbeResult
from stronghold_operator.probes.memcached import parse_stats

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
STARTED = 1_767_268_800  # the cache's start time (unix seconds)


def cache_policy(**extra: Any) -> HealthPolicySpec:
    spec: dict[str, Any] = {
        "interval": "10s",
        "failureThreshold": 1,
        "checks": [{"name": "cache", "memcached": {"address": "cache:11211"}}],
    }
    spec.update(extra)
    return parse(HealthPolicySpec, spec)


def stats(
    hits: int, gets: int, uptime: int, started: int = STARTED, evictions: int = 0
) -> ProbeResult:
    """What the probe reads from ``stats``: counters since the cache started ``started``."""
    return ProbeResult(
        latency_ms=1,
        numbers={
            "getHits": hits,
            "getMisses": gets - hits,
            "cmdGet": gets,
            "evictionsTotal": evictions,
            "uptimeSeconds": uptime,
            "sampledAt": started + uptime,
            "bytes": 10,
            "limitMaxBytes": 100,
            "currConnections": 2,
        },
    )


def rounds(policy: HealthPolicySpec, results: list[ProbeResult], step_s: float = 10) -> list[Any]:
    """Evaluate ``results`` one round each (``step_s`` apart); every round's Evaluation."""
    status: dict[str, Any] = {}
    out = []
    for i, r in enumerate(results):
        ev = h.evaluate(policy, "p", status, {"cache": r}, None, T0 + timedelta(seconds=i * step_s))
        status = dict(status) | ev.status
        out.append(ev)
    return out


# ----------------------------------------------------------------- the probe's numbers


def test_stats_time_and_uptime_are_kept_for_the_baseline() -> None:
    raw = b"STAT uptime 42\r\nSTAT time 1767268842\r\nSTAT cmd_get 3\r\nSTAT get_hits 1\r\nEND\r\n"
    assert parse_stats(raw) == {
        "uptimeSeconds": 42,
        "sampledAt": 1767268842,
        "cmdGet": 3,
        "getHits": 1,
    }


# ----------------------------------------------------------------- windows and ratios


def test_window_needs_a_baseline_and_detects_resets() -> None:
    now = {"cmdGet": 10, "getHits": 5, "uptimeSeconds": 20, "sampledAt": STARTED + 20}
    keys = ("cmdGet", "getHits")
    assert samples.window(now, {}, keys) == "no baseline"
    assert samples.window({}, now, keys) == "no data"
    before = {"cmdGet": 4, "getHits": 1, "uptimeSeconds": 10, "sampledAt": STARTED + 10}
    w = samples.window(now, before, keys)
    assert isinstance(w, samples.Window) and w.deltas == {"cmdGet": 6, "getHits": 4}
    assert w.seconds == 10
    # Counters went down: the target restarted.
    assert samples.window(before, now, keys) == "counter reset"
    # A restart between two probes with more traffic since than before: counters are
    # higher, but the start time (sampledAt - uptime) moved.
    restarted = {"cmdGet": 50, "getHits": 40, "uptimeSeconds": 5, "sampledAt": STARTED + 30}
    assert samples.window(restarted, now, keys) == "counter reset"
    # The previous probe long ago (operator restart, an outage): not this interval.
    later = {**now, "cmdGet": 500, "uptimeSeconds": 400, "sampledAt": STARTED + 400}
    assert samples.window(later, now, keys, max_age_s=60) == "baseline too old"
    assert isinstance(samples.window(later, now, keys), samples.Window)
    # Counters of unknown age (a status written before sampledAt existed): no baseline.
    assert samples.window(later, {"cmdGet": 1, "getHits": 1}, keys) == "no baseline"


def test_ratio_reports_but_does_not_judge_a_small_sample() -> None:
    small = samples.ratio(1, 2, 100, "gets", " in the interval")
    assert (small.percent, small.sample, small.judged) == (50.0, 2, False)
    assert small.note == "sample too small: 2 gets in the interval < 100"
    enough = samples.ratio(50, 500, 100, "gets")
    assert (enough.percent, enough.judged, enough.note) == (10.0, True, "")
    assert samples.ratio(0, 0, 1, "gets").percent is None


@given(
    before=st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)),
    now=st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)),
    minimum=st.integers(1, 1000),
)
def test_window_and_ratio_properties(
    before: tuple[int, int], now: tuple[int, int], minimum: int
) -> None:
    """A window is never negative; a ratio is judged exactly when its sample is big enough,
    and its percentage is always between 0 and 100."""
    b = {"cmdGet": max(before), "getHits": min(before)}
    n = {"cmdGet": max(now), "getHits": min(now)}
    w = samples.window(n, b, ("cmdGet", "getHits"))
    if isinstance(w, str):
        assert w == "counter reset" and (n["cmdGet"] < b["cmdGet"] or n["getHits"] < b["getHits"])
        return
    assert all(d >= 0 for d in w.deltas.values())
    gets, hits = w.deltas["cmdGet"], w.deltas["getHits"]
    if hits <= gets:
        r = samples.ratio(hits, gets, minimum, "gets")
        assert r.judged == (gets >= minimum)
        assert r.percent is None or 0 <= r.percent <= 100


# ----------------------------------------------------------------- the memcached check


def test_fresh_cache_with_a_few_gets_is_healthy_with_a_note() -> None:
    """The issue's case: a freshly started cache, 2 then 3 gets (half misses), is not judged."""
    policy = cache_policy()
    evs = rounds(policy, [stats(1, 2, uptime=3), stats(2, 5, uptime=13), stats(3, 7, uptime=23)])
    first, second, third = (ev.status["checks"][0] for ev in evs)
    assert first["measurements"]["hitRatio"] == 50.0  # reported (since start) ...
    assert first["measurements"]["hitRatioJudged"] is False  # ... never judged
    assert "no baseline" in first["measurements"]["hitRatioNote"]
    assert second["measurements"]["intervalHitRatio"] == pytest.approx(33.33)
    assert second["measurements"]["intervalGets"] == 3
    assert second["message"] == (
        "cache answering; hit ratio not judged (sample too small: 3 gets in the interval < 100)"
    )
    assert third["state"] == "Healthy" and third["findings"] == []
    assert all(ev.severity == "None" and not ev.notifications for ev in evs)


def test_low_hit_ratio_under_real_traffic_is_judged() -> None:
    policy = cache_policy()
    evs = rounds(policy, [stats(100, 200, uptime=100), stats(150, 700, uptime=110)])
    cache = evs[1].status["checks"][0]
    assert cache["measurements"]["intervalHitRatio"] == 10.0
    assert cache["measurements"]["intervalGets"] == 500
    assert (cache["state"], cache["reason"]) == ("Critical", "HitRatioLow")
    assert cache["message"] == "hit ratio 10.0% below 50% (500 gets)"
    assert evs[1].severity == "P3" and [n.kind for n in evs[1].notifications] == ["Opened"]


def test_counter_reset_judges_nothing_that_round() -> None:
    """A restarted cache: counters below the baseline (or a new start time) start afresh."""
    policy = cache_policy(minSample=1)
    busy = stats(9000, 10000, uptime=1000)
    restarted = stats(1, 3, uptime=2, started=STARTED + 1005)
    evs = rounds(policy, [busy, restarted, stats(1, 3, uptime=12, started=STARTED + 1005)])
    cache = evs[1].status["checks"][0]
    assert cache["state"] == "Healthy" and cache["measurements"]["hitRatioJudged"] is False
    assert cache["measurements"]["hitRatioNote"].startswith("counter reset")
    assert "evictionsPerInterval" not in cache["measurements"]
    # The next round has a baseline again: no gets since, nothing to judge.
    assert evs[2].status["checks"][0]["measurements"]["intervalGets"] == 0
    assert all(not ev.notifications for ev in evs)
    # A restart with more traffic since than before: counters higher, start time moved.
    more = stats(5, 20_000, uptime=5, started=STARTED + 1005)
    ev = rounds(policy, [busy, more])[1]
    assert ev.status["checks"][0]["measurements"]["hitRatioNote"].startswith("counter reset")
    assert ev.status["checks"][0]["state"] == "Healthy"


def test_stale_baseline_is_not_the_previous_probe() -> None:
    """After an operator restart, the written counters may be hours old: start afresh."""
    policy = cache_policy()  # interval 10s: older than 60s is stale
    ev = rounds(policy, [stats(100, 200, uptime=100), stats(100, 5200, uptime=4000)], 3900)[1]
    cache = ev.status["checks"][0]
    assert cache["measurements"]["hitRatioNote"].startswith("baseline too old")
    assert cache["state"] == "Healthy"


def test_outage_keeps_the_baseline_and_it_goes_stale() -> None:
    policy = cache_policy(failureThreshold=3)
    down = ProbeResult.failed("Unreachable", "connection refused")
    evs = rounds(policy, [stats(100, 200, uptime=100), down, stats(100, 900, uptime=300)])
    kept = evs[1].status["checks"][0]["measurements"]
    assert kept["cmdGet"] == 200 and kept["sampledAt"] == STARTED + 100
    assert evs[2].status["checks"][0]["measurements"]["hitRatioNote"].startswith("baseline too old")


def test_min_gets_of_the_check_overrides_min_sample() -> None:
    policy = cache_policy(
        minSample=1000,
        checks=[{"name": "cache", "memcached": {"address": "cache:11211", "minGets": 10}}],
    )
    ev = rounds(policy, [stats(0, 0, uptime=10), stats(1, 20, uptime=20)])[1]
    assert ev.status["checks"][0]["reason"] == "HitRatioLow"
    strict = cache_policy(minSample=1000)
    ev = rounds(strict, [stats(0, 0, uptime=10), stats(1, 500, uptime=20)])[1]
    assert ev.status["checks"][0]["measurements"]["hitRatioNote"] == (
        "sample too small: 500 gets in the interval < 1000"
    )


def test_one_shot_judges_since_start_with_the_same_minimum() -> None:
    """``stronghold check`` probes once: since start, but not on two gets."""
    check = cache_policy().checks[0]
    a = h.assess(check, stats(1, 2, uptime=5), None, SampleRule(one_shot=True))
    assert a.state == "Healthy" and "since start < 100" in a.message
    a = h.assess(check, stats(10, 200, uptime=5000), None, SampleRule(one_shot=True))
    assert (a.state, a.reason) == ("Critical", "HitRatioLow")
    a = h.assess(check, stats(10, 200, uptime=5000), None)  # the operator: a baseline
    assert a.state == "Healthy"


def test_min_sample_bounds_are_invalid_spec() -> None:
    with pytest.raises(InvalidSpec, match="minSample"):
        cache_policy(minSample=0)
    with pytest.raises(InvalidSpec, match="resolveAfter"):
        cache_policy(flapDamping={"resolveAfter": 0})
    with pytest.raises(InvalidSpec, match="reopenWithin"):
        cache_policy(flapDamping={"reopenWithin": "25h"})
    p = cache_policy()
    assert (p.min_sample, p.flap_damping.resolve_after) == (100, 2)
    assert p.flap_damping.reopen_within == timedelta(minutes=5)


# ----------------------------------------------------------------- flap damping

P3 = h.Classification("P3", "cache", "cache: hit ratio 10.0% below 50%", ("cache",))
P2 = h.Classification("P2", "cache", "cache: connection refused", ("cache",))
DB = h.Classification("P1", "db", "db: connection refused", ("db",))


def steps(
    policy: HealthPolicySpec, found: list[h.Classification | None], step_s: float = 10
) -> list[h.IncidentStep]:
    incident: dict[str, Any] | None = None
    recent: list[dict[str, Any]] = []
    out = []
    for i, f in enumerate(found):
        s = h.step_incident(
            policy, "p", incident, recent, f, None, T0 + timedelta(seconds=i * step_s)
        )
        incident, recent = s.incident, s.recent
        out.append(s)
    return out


def kinds(ss: list[h.IncidentStep]) -> list[str]:
    return [n.kind for s in ss for n in s.notifications]


def test_oscillating_check_keeps_one_incident() -> None:
    out = steps(cache_policy(), [P3, None, P3, None, P3, None, P3])
    assert kinds(out) == ["Opened"]
    assert len({s.incident["id"] for s in out if s.incident}) == 1
    assert all(s.incident is not None for s in out) and out[-1].recent == []
    assert "healthyRounds" not in out[-1].incident  # type: ignore[operator]


def test_resolves_after_resolve_after_rounds_and_ends_at_the_first() -> None:
    out = steps(cache_policy(), [P3, None, None])
    recovering = out[1].incident
    assert recovering is not None and recovering["healthyRounds"] == 1
    assert recovering["recoveringSince"] == "2026-01-01T12:00:10Z"
    assert kinds(out) == ["Opened", "Resolved"]
    closed = out[2].recent[0]
    assert closed["endedAt"] == "2026-01-01T12:00:10Z" and closed["durationSeconds"] == 10
    # The condition says so while it recovers.
    conds = h.policy_conditions([], recovering, cache_policy())
    assert "(recovering: 1/2 healthy rounds)" in conds[3].message


def test_reopen_within_the_window_reuses_the_incident() -> None:
    policy = cache_policy(flapDamping={"resolveAfter": 1, "reopenWithin": "1m"})
    out = steps(policy, [P3, None, P2, None])
    assert kinds(out) == ["Opened", "Resolved", "Opened", "Resolved"]
    first_id = out[0].incident["id"]  # type: ignore[index]
    again = out[2].incident
    assert again is not None and again["id"] == first_id and again["reopened"] == 1
    assert again["startedAt"] == "2026-01-01T12:00:00Z" and again["maxSeverity"] == "P2"
    assert out[2].recent == []  # it left the resolved list
    assert "INCIDENT REOPENED - P2" in out[2].notifications[0].message
    assert [r["id"] for r in out[3].recent] == [first_id]
    assert out[3].recent[0]["reopened"] == 1 and out[3].recent[0]["durationSeconds"] == 30


def test_reopen_needs_the_same_root_cause_and_the_window() -> None:
    policy = cache_policy(flapDamping={"resolveAfter": 1, "reopenWithin": "1m"})
    other = steps(policy, [P3, None, DB])
    assert other[2].incident["id"] != other[0].incident["id"]  # type: ignore[index]
    late = steps(policy, [P3, None, None, None, None, None, None, None, P3])
    assert late[-1].incident["id"] != late[0].incident["id"]  # type: ignore[index]
    assert len(late[-1].recent) == 1
    never = cache_policy(flapDamping={"resolveAfter": 1, "reopenWithin": "0s"})
    out = steps(never, [P3, None, P3])
    assert out[2].incident["id"] != out[0].incident["id"]  # type: ignore[index]


@given(
    pattern=st.lists(st.booleans(), min_size=1, max_size=40),
    resolve_after=st.integers(1, 5),
)
def test_damping_properties(pattern: list[bool], resolve_after: int) -> None:
    """Whatever the pattern of bad (True) and quiet rounds: an incident resolves exactly
    when ``resolveAfter`` quiet rounds came in a row, and with re-opening, one root cause
    flapping within the window never has more than one incident id."""
    policy = cache_policy(flapDamping={"resolveAfter": resolve_after, "reopenWithin": "1h"})
    out = steps(policy, [P3 if bad else None for bad in pattern])
    quiet, open_ = 0, False
    for bad, s in zip(pattern, out, strict=True):
        quiet = 0 if bad else quiet + 1
        open_ = open_ or bad
        resolved = any(n.kind == "Resolved" for n in s.notifications)
        assert resolved == (open_ and quiet == resolve_after), (pattern, quiet)
        open_ = open_ and not resolved
        assert (s.incident is not None) == open_
        if bad:
            assert "healthyRounds" not in s.incident  # type: ignore[operator]
    ids = {s.incident["id"] for s in out if s.incident} | {r["id"] for r in out[-1].recent}
    assert len(ids) <= 1


def test_recovering_helpers_are_pure() -> None:
    fd = cache_policy().flap_damping
    inc = {"id": "x", "severity": "P3"}
    held = damping.recovering(inc, fd, T0)
    assert held is not None and inc == {"id": "x", "severity": "P3"}
    assert damping.recovering(held, fd, T0 + timedelta(seconds=10)) is None
    assert damping.relapsed(held) == inc
    assert damping.resolved_at(held, T0 + timedelta(seconds=20)) == T0
    assert damping.resolved_at(inc, T0) == T0
