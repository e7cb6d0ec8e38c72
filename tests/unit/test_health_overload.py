"""Storm-aware judgement: a slow result the operator's own overload explains is not the
target's fault (logic/health/overload.py, runtime/load.py, the scheduler's lateness)."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stronghold_operator.logic import health as h
from stronghold_operator.logic.health.findings import Finding
from stronghold_operator.logic.health.overload import Load, discounted
from stronghold_operator.metrics import registry
from stronghold_operator.models.base import parse
from stronghold_operator.models.health import HealthPolicySpec, HealthPolicyStatus
from stronghold_operator.probes.base import ProbeResult, UrlResult
from stronghold_operator.runtime import load as runtime_load
from stronghold_operator.runtime.scheduler import Scheduler, lateness

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
WEB = "http://web:8000/"
OVERLOADED = Load(lateness_s=0.0, lag_s=4.0)  # a 4 s stall: a 5 s timeout is not judgeable
QUIET = Load(lateness_s=0.01, lag_s=0.02)


def policy(**extra: Any) -> HealthPolicySpec:
    spec: dict[str, Any] = {
        "interval": "10s",
        "timeout": "5s",
        "failureThreshold": 1,
        "checks": [
            {"name": "web", "http": {"url": WEB, "latency": {"warning": "1s", "critical": "3s"}}},
            {"name": "cache", "memcached": {"address": "cache:11211"}},
        ],
    }
    spec.update(extra)
    return parse(HealthPolicySpec, spec)


def web(latency: float | None = 20.0, failure: str | None = None, code: int = 200) -> ProbeResult:
    url = UrlResult(WEB, None if failure else code, latency, failure=failure)  # type: ignore[arg-type]
    return ProbeResult(latency_ms=latency, urls=(url,))


CACHE_OK = ProbeResult(latency_ms=1, numbers={"getHits": 90, "getMisses": 10, "evictions": 0})
TIMEOUT = ProbeResult.failed("Timeout", "no answer within 5s")
REFUSED = ProbeResult.failed("Unreachable", "connection refused")


def healthy_status(p: HealthPolicySpec) -> dict[str, Any]:
    ev = h.evaluate(p, "p", {}, {"web": web(), "cache": CACHE_OK}, None, T0)
    return {**ev.status, "conditions": [c.__dict__ for c in ev.conditions]}


# --- the pure rule ---------------------------------------------------------------------------


def test_a_timeout_during_a_long_stall_is_not_counted() -> None:
    timeout = [Finding("Timeout", "critical", "no answer")]
    why = discounted(TIMEOUT, timeout, None, 5.0, 10.0, OVERLOADED)
    assert why is not None and "OperatorOverloaded" in why and "stalled 4.00s" in why
    assert discounted(TIMEOUT, timeout, None, 5.0, 10.0, QUIET) is None


def test_a_round_half_an_interval_late_discounts_a_slow_answer() -> None:
    slow = [Finding("LatencyCritical", "critical", "4000ms >= 3000ms")]
    late = Load(lateness_s=6.0, lag_s=0.0)
    why = discounted(web(4000), slow, 4000, 5.0, 10.0, late)
    assert why is not None and "6.0s late" in why
    assert discounted(web(4000), slow, 4000, 5.0, 10.0, Load(lateness_s=4.9)) is None


def test_the_stall_is_compared_with_what_the_probe_measured() -> None:
    slow = [Finding("LatencyWarning", "warning", "1500ms >= 1000ms")]
    # 0.8 s of a 1.5 s answer was the operator's own stall: over half, not judgeable.
    assert discounted(web(1500), slow, 1500, 5.0, 10.0, Load(lag_s=0.8)) is not None
    # 0.5 s of a 1.5 s answer: the target was slow on its own.
    assert discounted(web(1500), slow, 1500, 5.0, 10.0, Load(lag_s=0.5)) is None


def test_an_answer_that_is_not_slow_is_the_targets_however_late() -> None:
    down = [Finding("Unreachable", "critical", "connection refused")]
    assert discounted(REFUSED, down, None, 5.0, 10.0, Load(60.0, 60.0)) is None
    mixed = [
        Finding("UnexpectedStatus", "critical", "HTTP 500"),
        Finding("LatencyCritical", "critical", "4000ms"),
    ]
    assert discounted(web(4000, code=500), mixed, 4000, 5.0, 10.0, Load(60.0, 60.0)) is None
    assert discounted(web(), [], 20, 5.0, 10.0, Load(60.0, 60.0)) is None


# --- a whole round ---------------------------------------------------------------------------


def test_an_overloaded_round_keeps_states_opens_nothing_and_says_why() -> None:
    p = policy()
    before = healthy_status(p)
    results = {"web": web(None, "Timeout"), "cache": CACHE_OK}
    judged = h.evaluate(p, "p", before, results, None, T0 + timedelta(seconds=10))
    assert judged.status["incident"] is not None  # without the load: the target's fault
    ev = h.evaluate(p, "p", before, results, None, T0 + timedelta(seconds=10), load=OVERLOADED)
    assert ev.discounted == ("web",)
    assert ev.status["incident"] is None and ev.notifications == []
    entry = ev.status["checks"][0]
    assert entry["state"] == "Healthy" and entry["observedState"] == "Unknown"
    assert entry["reason"] == before["checks"][0]["reason"]  # no status write for it
    assert "OperatorOverloaded" in entry["message"]
    ready = ev.conditions[0]
    assert (ready.type, ready.status, ready.reason) == ("Ready", "True", "OperatorOverloaded")
    assert "web not judged" in ready.message
    assert ev.conditions[1].status == "True"  # Healthy stays True
    HealthPolicyStatus.model_validate(ev.status)  # what the CRD's status schema accepts


def test_a_quiet_round_is_judged_as_before() -> None:
    p = policy()
    before = healthy_status(p)
    results = {"web": web(None, "Timeout"), "cache": CACHE_OK}
    a = h.evaluate(p, "p", before, results, None, T0)
    b = h.evaluate(p, "p", before, results, None, T0, load=QUIET)
    assert a == b and b.discounted == () and b.conditions[0].reason == "Reconciled"


SLOW = st.one_of(
    st.just(web(None, "Timeout")),
    st.floats(1000, 4999).map(web),
)
LOADS = st.builds(Load, lateness_s=st.floats(5.01, 100), lag_s=st.floats(0, 100)) | st.builds(
    Load, lateness_s=st.floats(0, 100), lag_s=st.floats(2.5, 100)
)


@settings(max_examples=60, deadline=None)
@given(rounds=st.lists(st.tuples(SLOW, LOADS), min_size=1, max_size=8))
def test_overloaded_rounds_never_move_a_state_or_open_an_incident(
    rounds: list[tuple[ProbeResult, Load]],
) -> None:
    """Property: however many overloaded rounds of slow answers, a healthy policy stays
    healthy with no incident and no notification (they are not evidence)."""
    p = policy()
    status: Mapping[str, Any] = healthy_status(p)
    for i, (result, load) in enumerate(rounds):
        now = T0 + timedelta(seconds=10 * (i + 1))
        ev = h.evaluate(p, "p", status, {"web": result, "cache": CACHE_OK}, None, now, load=load)
        assert ev.discounted == ("web",)
        assert [c["state"] for c in ev.status["checks"]] == ["Healthy", "Healthy"]
        assert ev.status["incident"] is None and ev.notifications == []
        status = ev.status


@settings(max_examples=60, deadline=None)
@given(load=st.builds(Load, st.floats(0, 1000), st.floats(0, 1000)))
def test_a_refused_connection_is_judged_the_same_under_any_load(load: Load) -> None:
    p = policy()
    before = healthy_status(p)
    results = {"web": web(None, "Unreachable"), "cache": REFUSED}
    a = h.evaluate(p, "p", before, results, None, T0)
    b = h.evaluate(p, "p", before, results, None, T0, load=load)
    assert (a.status, a.conditions, b.discounted) == (b.status, b.conditions, ())


# --- measuring it ----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_monitor_keeps_the_worst_stall_of_a_window_and_holds_overload() -> None:
    clock = Clock()
    m = runtime_load.LagMonitor(clock=clock)
    m.record(0.01)
    clock.now = 101.0
    m.record(2.0)  # a 2 s stall ended at 101
    clock.now = 102.0
    m.record(0.02)
    assert m.worst_since(100.5) == 2.0 and m.worst_since(101.5) == 0.02
    assert m.overloaded()  # 2 s >= OVERLOAD_LAG_S
    clock.now = 101.0 + runtime_load.HOLD_S + 0.1
    assert not m.overloaded()


async def test_a_blocked_loop_is_measured_as_lag() -> None:
    m = runtime_load.LagMonitor(tick=0.05)
    m.start()
    began = time.monotonic()
    await asyncio.sleep(0.1)
    time.sleep(0.4)  # noqa: ASYNC251 - the point: the loop blocked (a long parse, a GC)
    await asyncio.sleep(0.1)
    assert m.worst_since(began) >= 0.3
    await m.stop()


async def test_a_pass_knows_how_late_it_started() -> None:
    seen: list[float] = []
    ran = asyncio.Event()

    class Late:
        def observe(self, body: Mapping[str, Any]) -> bool:
            return False

        async def run(self) -> float:
            seen.append(lateness())
            ran.set()
            return 3600.0

        def close(self) -> None:
            return None

        async def settle(self) -> None:
            return None

    s: Scheduler[Late] = Scheduler("Test", first_within=0.0)
    s.track("u", {"metadata": {"name": "a", "namespace": "n"}}, Late)
    s.plan("u", time.monotonic() - 5.0)  # due five seconds ago: the operator fell behind
    await asyncio.wait_for(ran.wait(), 5)
    await s.stop()
    assert seen and seen[0] >= 5.0 and lateness() == 0.0  # only inside the pass


def test_note_round_counts_discounts_and_marks_overload() -> None:
    before = runtime_load.DISCOUNTED._value.get()
    runtime_load.note_round(Load(), 10.0, 3)
    assert runtime_load.DISCOUNTED._value.get() == before + 3
    assert runtime_load.monitor().overloaded()


async def test_a_round_reads_the_load_after_its_probes_and_reports_shared_targets() -> None:
    from dataclasses import replace

    from stronghold_operator.services import health as service
    from tests.unit.test_health_service import WHERE, World

    w = World()
    p = policy()
    w.prober.results = {"web": web(None, "Timeout"), "cache": CACHE_OK}
    reads: list[str] = []
    shared: list[tuple[str, str]] = []

    def load() -> Load:
        reads.append("load")
        return OVERLOADED

    ports = replace(w.ports(), load=load, shared=lambda t, d: shared.append((t, d)))
    r = await service.run_round(p, healthy_status(p), WHERE, ports)
    assert reads == ["load"] and r.evaluation is not None
    assert r.evaluation.discounted == ("web",) and shared == []  # nothing turned bad
    assert next(c for c in r.conditions if c.type == "Ready").reason == "OperatorOverloaded"
    # The same round judged on a quiet operator: the web target is failing.
    ports = replace(ports, load=lambda: QUIET)
    r = await service.run_round(p, healthy_status(p), WHERE, ports)
    assert shared == [("http://web:8000", "failing")]


def test_the_operators_overload_is_not_an_event_per_policy() -> None:
    from stronghold_operator import conditions as cond
    from stronghold_operator.services import health as service

    into = cond.Transition("Ready", "True", "True", "OperatorOverloaded", "", "Reconciled")
    out = cond.Transition("Ready", "True", "True", "Reconciled", "", "OperatorOverloaded")
    invalid = cond.Transition("Ready", "True", "False", "InvalidSpec", "", "Reconciled")
    assert not service.newsworthy(into, lambda _t: False)
    assert not service.newsworthy(out, lambda _t: False)
    assert service.newsworthy(invalid, lambda _t: True)


async def test_a_round_whose_only_news_is_the_overload_changes_no_written_status() -> None:
    from dataclasses import replace

    from stronghold_operator.services import health as service
    from tests.unit.test_health_service import WHERE, World

    w = World()
    p = policy()
    w.prober.results = {"web": web(None, "Timeout"), "cache": CACHE_OK}
    current = healthy_status(p)
    r = await service.run_round(p, current, WHERE, replace(w.ports(), load=lambda: OVERLOADED))
    assert r.evaluation is not None and r.evaluation.discounted == ("web",)
    fields, conditions = service.without_overload(current, r)
    # The discounted check keeps its written reason and message; Ready is not rewritten.
    assert [(c["name"], c["reason"]) for c in fields["checks"]] == [
        (c["name"], c["reason"]) for c in current["checks"]
    ]
    assert fields["checks"][0]["message"] == current["checks"][0]["message"]
    assert all(c.reason != "OperatorOverloaded" for c in conditions)
    assert service.signature({**current, **fields}) == service.signature(current)
    # ... but its counters are the round's (kept in memory by the writer's skip path).
    assert fields["checks"][1] == r.fields["checks"][1]


async def test_an_overloaded_round_with_a_real_change_is_written_whole() -> None:
    from dataclasses import replace

    from stronghold_operator.services import health as service
    from tests.unit.test_health_service import WHERE, World

    w = World()
    p = policy()
    # web's slow answer is discounted, but the cache's refused connection is a real failure.
    w.prober.results = {"web": web(None, "Timeout"), "cache": REFUSED}
    current = healthy_status(p)
    r = await service.run_round(p, current, WHERE, replace(w.ports(), load=lambda: OVERLOADED))
    fields, conditions = service.without_overload(current, r)
    assert (fields, conditions) == (r.fields, r.conditions)


def test_a_garbage_collection_is_timed_by_its_generation() -> None:
    def counted(generation: str) -> float:
        name = "stronghold_gc_pause_seconds_count"
        return registry.get_sample_value(name, {"generation": generation}) or 0.0

    pauses = runtime_load.GcPauses()
    before = counted("0"), counted("2")
    gc.callbacks.append(pauses)
    try:
        gc.collect(0)
        gc.collect(2)
    finally:
        gc.callbacks.remove(pauses)
    assert (counted("0"), counted("2")) == (before[0] + 1, before[1] + 1)


def test_the_operator_refreezes_its_long_lived_objects_after_collecting_their_cycles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reference cycle among frozen objects (a deleted policy's loop) is freed at the next
    refreeze, and what survives is frozen again (never scanned by the automatic collections)."""
    import weakref

    from stronghold_operator.cli import run

    class Cycle:
        def __init__(self) -> None:
            self.me = self

    monkeypatch.setattr(run, "GC_REFREEZE_S", 0.05)
    loop = asyncio.new_event_loop()
    was_enabled = gc.isenabled()
    gc.disable()  # only the refreeze collects here
    try:
        kept = Cycle()

        def frozen(obj: object) -> bool:  # in no generation the collector scans
            return not any(o is obj for o in gc.get_objects())

        def frozen_cycle() -> weakref.ref[Cycle]:
            ref = weakref.ref(Cycle())
            gc.freeze()
            assert ref() is not None and gc.get_freeze_count() > 0
            return ref

        first = frozen_cycle()
        run._refreeze(loop)
        assert first() is None and frozen(kept)
        second = frozen_cycle()
        loop.run_until_complete(asyncio.sleep(0.08))  # the refreeze _refreeze scheduled
        assert second() is None and frozen(kept)
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()
        loop.close()
