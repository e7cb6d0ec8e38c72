"""The daily verbs' decisions: the paused-until annotation of a ScalingPolicy, start-now and
skip of a MaintenanceWindow (pure logic, services on fakes, the CLI's parsing and outcomes)."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stronghold_operator.cli import build_parser, verbs
from stronghold_operator.cli import scaling as scaling_cli
from stronghold_operator.cli import window as window_cli
from stronghold_operator.logic import scaling as engine
from stronghold_operator.logic import window as w
from stronghold_operator.models.errors import ApiError
from stronghold_operator.models.maintenance import SKIP_ANNOTATION, START_NOW_ANNOTATION
from stronghold_operator.services import maintenance as window_service
from stronghold_operator.services import scaling as service
from tests.unit.test_scaling_service import META, FakeAutoscalers, FakeClock, FakeTarget, policy
from tests.unit.test_window import END, MIN, START, T0, Sim, make
from tests.unit.test_window_service import START as SVC_START
from tests.unit.test_window_service import World, conditions, reasons

HOUR = timedelta(hours=1)

# -- ScalingPolicy: the paused-until annotation --------------------------------------------


def hot(now: datetime, n: int = 3) -> list[engine.Sample]:
    return [engine.Sample(now - timedelta(seconds=5 * i), 95.0, 20.0) for i in reversed(range(n))]


def test_pause_request_parses_rfc3339_with_an_offset_only() -> None:
    assert engine.pause_request(None) is None
    assert engine.pause_request(" ") is None
    assert engine.pause_request("2026-03-01T14:00:00Z") == datetime(2026, 3, 1, 14, tzinfo=UTC)
    for bad in ("tomorrow", "2026-03-01T14:00:00", "1h"):
        with pytest.raises(ValueError, match=r"ops\.stronghold\.io/paused-until"):
            engine.pause_request(bad)


def test_the_annotation_holds_until_its_time_then_the_policy_scales_again() -> None:
    p = policy(scaleUp={"stabilizationWindow": "0s"})
    now = T0
    held = engine.decide(p, hot(now), 2, now, paused=now + HOUR)
    assert (held.action, held.reason) == ("Hold", "Paused")
    assert "ops.stronghold.io/paused-until" in held.message and not held.acts
    after = engine.decide(p, hot(now + 2 * HOUR), 2, now + 2 * HOUR, paused=now + HOUR)
    assert after.action == "ScaleUp" and after.acts


def test_the_later_of_spec_and_annotation_decides() -> None:
    now = T0
    p = policy(pausedUntil=(now + HOUR).isoformat())
    assert engine.paused_until(p, now + 2 * HOUR, now) == now + 2 * HOUR
    assert engine.paused_until(p, now + MIN, now) == now + HOUR
    assert engine.paused_until(p, None, now + 2 * HOUR) is None
    d = engine.decide(p, hot(now), 2, now, paused=now + MIN)
    assert d.reason == "Paused" and "spec.pausedUntil" in d.message
    # A maintenance freeze is named first; the pause still shows in status (below).
    frozen = engine.decide(p, hot(now), 2, now, maintenance="mw", paused=now + 2 * HOUR)
    assert frozen.reason == "MaintenanceWindow"


def _reconcile(annotation: str | None, target: FakeTarget, clock: FakeClock) -> service.Pass:
    ports = service.Ports(target, FakeAutoscalers(), clock, lambda: None, lambda: annotation)
    p = policy(scaleUp={"stabilizationWindow": "0s"})
    return asyncio.run(service.reconcile(p, META, ports, service.Memory(), {}))


def test_service_shows_the_pause_in_status_and_never_scales() -> None:
    clock = FakeClock()
    target = FakeTarget(cpu=95.0, clock=clock)
    until = clock.now + HOUR
    result = _reconcile(until.strftime("%Y-%m-%dT%H:%M:%SZ"), target, clock)
    status = result.status.to_status()
    assert status["pausedUntil"] == until.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert status["lastDecision"]["reason"] == "Paused"
    active = {c.type: c for c in result.status.conditions}["ScalingActive"]
    assert (active.status, active.reason) == ("False", "Paused")
    assert target.scaled == []
    # Resumed (annotation gone): it scales, and pausedUntil is deleted from status.
    result = _reconcile(None, target, clock)
    assert target.scaled == [3]
    assert result.status.to_status()["pausedUntil"] is None


def test_a_bad_annotation_is_reported_naming_it_and_holds() -> None:
    clock = FakeClock()
    target = FakeTarget(cpu=95.0, clock=clock)
    result = _reconcile("next tuesday", target, clock)
    ready = {c.type: c for c in result.status.conditions}["Ready"]
    assert (ready.status, ready.reason) == ("False", "InvalidAnnotation")
    assert "ops.stronghold.io/paused-until" in ready.message
    assert target.scaled == []


# -- MaintenanceWindow: start-now ------------------------------------------------------------

NOW = START - 3 * 24 * HOUR  # days before the next scheduled window


def start_now(value: str = "req-1", duration: str | None = None) -> w.Manual:
    return w.Manual(start_now=w.StartNow(value, duration))


def test_start_now_runs_the_pre_checks_then_opens_for_the_schedules_duration() -> None:
    spec, rec = make()
    sim = Sim(spec, rec, pre_ticks=1)
    sim.tick(NOW, start_now("20261206t013045z-ab12cd"))
    p = sim.progress
    assert p is not None and p.id == "now-20261206t013045z-ab12cd"
    assert (p.start, p.end, p.trigger) == (NOW, NOW + 2 * HOUR, "20261206t013045z-ab12cd")
    assert sim.pre_started == [p.id] and not sim.frozen  # gated like a scheduled start
    assert sim.conditions()["Active"] == ("False", "WaitingForPreChecks")
    assert "StartNowRequested" in [e.reason for e in sim.events]
    sim.tick(NOW + MIN)
    assert sim.frozen and sim.conditions()["Active"] == ("True", "WindowOpen")
    opened = [e for e in sim.events if e.reason == "WindowOpened"]
    assert len(opened) == 1 and "started by request" in opened[0].message
    assert sim.last is not None and sim.last.next_window is not None
    assert sim.last.next_window.start == START  # the schedule goes on
    sim.tick(NOW + 2 * HOUR)  # its end: released, post-checks, history
    sim.tick(NOW + 2 * HOUR + MIN)
    assert not sim.frozen and sim.progress is None
    (entry,) = sim.history
    assert entry.result == "Succeeded" and entry.trigger == "20261206t013045z-ab12cd"
    assert entry.to_status()["trigger"] == "20261206t013045z-ab12cd"


def test_start_now_honours_on_pre_check_failure() -> None:
    spec, rec = make()
    sim = Sim(spec, rec, pre_ok=False)
    sim.tick(NOW, start_now())
    assert not sim.frozen and sim.conditions()["Active"] == ("False", "Skipped")
    proceed, prec = make(onPreCheckFailure="Proceed")
    sim = Sim(proceed, prec, pre_ok=False)
    sim.tick(NOW, start_now())
    assert sim.frozen


def test_start_now_duration_and_bad_requests() -> None:
    spec, rec = make(preChecks={"snapshot": False})
    d = w.decide(spec, rec, NOW, None, (), start_now(duration="10m"))
    assert d.progress is not None and d.progress.end == NOW + 10 * MIN
    assert d.freeze  # nothing to check first: open at once
    for bad in ("soon", "10s", "800h"):
        d = w.decide(spec, rec, NOW, None, (), start_now(duration=bad))
        assert d.progress is None and [e.reason for e in d.events] == ["StartNowIgnored"]
        assert "start-now-duration" in d.events[0].message
    # An open window is not interrupted.
    open_now = w.decide(spec, rec, START + MIN, None)
    assert open_now.freeze and open_now.progress is not None
    d = w.decide(spec, rec, START + 2 * MIN, open_now.progress, (), start_now())
    assert d.progress is not None and d.progress.id == open_now.progress.id
    assert [e.reason for e in d.events] == ["StartNowIgnored"]
    # A value used before (in history) is refused, not run twice.
    used = w.HistoryEntry(w.start_now_id("req-1"), NOW, END, END, "Scheduled", "", "", "Succeeded")
    d = w.decide(spec, rec, NOW, None, [used], start_now("req-1"))
    assert d.progress is None and "used before" in d.events[0].message


def test_start_now_takes_over_a_mere_preparation_and_while_suspended() -> None:
    spec, rec = make()
    prepared = w.decide(spec, rec, START - 20 * MIN, None)  # at the lead time
    assert prepared.progress is not None and prepared.run_pre_checks
    d = w.decide(spec, rec, START - 19 * MIN, prepared.progress, (), start_now())
    assert d.progress is not None and d.progress.trigger == "req-1"
    assert "gives way" in d.events[0].message
    suspended, srec = make(suspend=True)
    d = w.decide(suspended, srec, NOW, None, (), start_now())
    assert d.progress is not None and d.run_pre_checks


def test_start_now_id_is_deterministic_and_name_safe() -> None:
    assert w.start_now_id("20261206t013045z-ab12cd") == "now-20261206t013045z-ab12cd"
    assert w.start_now_id("Friday: DB upgrade!") == "now-friday-db-upgrade"
    weird = w.start_now_id("日本")
    assert weird.startswith("now-") and len(weird) == 16 and weird == w.start_now_id("日本")


# -- MaintenanceWindow: skip -----------------------------------------------------------------

NEXT_START = START + 7 * 24 * HOUR  # the Sunday after


def test_skip_cancels_exactly_the_named_window_and_then_stops_mattering() -> None:
    spec, rec = make()
    at = START.strftime("%Y-%m-%dT%H:%M:%SZ")
    d = w.decide(spec, rec, NOW, None, (), w.Manual(skip=True), skip=at)
    assert d.skipping is not None and d.skipping.start == START
    assert d.next_window is not None and d.next_window.start == NEXT_START
    assert [e.reason for e in d.events] == ["SkipRequested"]
    scheduled = {c.type: c for c in d.conditions}["Scheduled"]
    assert "skipping 2026-03-01T02:00:00+01:00 by request" in scheduled.message
    assert d.wake_at is not None and d.wake_at <= START
    # Not seen before is what makes an Event: the same value again is quiet.
    assert w.decide(spec, rec, NOW, None, (), skip=at).events == ()
    # The lead time passes without pre-checks.
    lead = w.decide(spec, rec, START - 20 * MIN, None, (), skip=at)
    assert lead.progress is None and not lead.run_pre_checks
    # Its start: recorded as skipped, nothing frozen.
    d = w.decide(spec, rec, START, None, (), skip=at)
    assert not d.freeze and d.progress is None and d.skip_finished is not None
    entry = d.skip_finished
    assert (entry.id, entry.result, entry.end_reason) == (
        "202603010100",
        "Skipped",
        "SkipRequested",
    )
    assert "WindowSkipped" in [e.reason for e in d.events]
    # Then the annotation no longer matters: the next one runs as scheduled.
    history = [entry]
    later = w.decide(spec, rec, START + MIN, None, history, skip=at)
    assert later.skipping is None and later.skip_finished is None and later.events == ()
    sim = Sim(spec, rec)
    sim.history = history
    sim.tick(NEXT_START - 30 * MIN)
    sim.tick(NEXT_START)
    assert sim.frozen


def test_removing_the_skip_before_the_start_unskips() -> None:
    spec, rec = make()
    at = START.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert w.decide(spec, rec, NOW, None, (), skip=at).next_window.start == NEXT_START  # type: ignore[union-attr]
    d = w.decide(spec, rec, NOW, None, (), skip=None)
    assert d.next_window is not None and d.next_window.start == START and d.skipping is None


def test_skip_drops_a_preparation_but_never_an_open_window() -> None:
    spec, rec = make()
    at = START.strftime("%Y-%m-%dT%H:%M:%SZ")
    prepared = w.decide(spec, rec, START - 20 * MIN, None)
    assert prepared.progress is not None
    d = w.decide(spec, rec, START - 19 * MIN, prepared.progress, (), w.Manual(skip=True), skip=at)
    assert d.progress is None and d.skipping is not None
    opened = w.decide(spec, rec, START + MIN, replace_passed(prepared.progress))
    assert opened.freeze and opened.progress is not None
    d = w.decide(spec, rec, START + 2 * MIN, opened.progress, (), w.Manual(skip=True), skip=at)
    assert d.freeze and [e.reason for e in d.events] == ["SkipIgnored"]
    assert "end-now" in d.events[0].message


def replace_passed(p: w.Progress) -> w.Progress:
    return w.pre_checks_done(w.pre_checks_started(p, START - 20 * MIN), True, "ok")


@pytest.mark.parametrize(
    ("value", "words"),
    [("next sunday", "not an RFC 3339"), ("2026-03-01T01:30:00Z", "no window of this schedule")],
)
def test_a_skip_naming_no_window_is_ignored_with_a_warning(value: str, words: str) -> None:
    spec, rec = make()
    d = w.decide(spec, rec, NOW, None, (), w.Manual(skip=True), skip=value)
    assert d.next_window is not None and d.next_window.start == START
    (event,) = d.events
    assert (event.type, event.reason) == ("Warning", "SkipIgnored") and words in event.message


def test_the_service_records_requests_in_status() -> None:
    world = World()
    meta_annotations = {START_NOW_ANNOTATION: "r1"}
    world.spec["preChecks"] = {"snapshot": False}
    result = _run_with(world, SVC_START - 3 * HOUR, meta_annotations)
    status = result.status.to_status()
    assert status["handledStartNow"] == "r1"
    assert status["currentWindow"]["trigger"] == "r1"
    assert conditions(result)["Active"] == ("True", "WindowOpen")
    assert world.covered.holder("scalingpolicies", "web") == "w1"
    assert "StartNowRequested" in reasons(result)
    # The same value next pass is not a new request.
    again = _run_with(world, SVC_START - 3 * HOUR + MIN, meta_annotations)
    assert "StartNowRequested" not in reasons(again)

    skipper = World()
    at = SVC_START.strftime("%Y-%m-%dT%H:%M:%SZ")
    result = _run_with(skipper, SVC_START - HOUR, {SKIP_ANNOTATION: at})
    status = result.status.to_status()
    assert status["handledSkip"] == at and status["skipping"]["start"] == at
    assert status["nextWindow"] is None  # a one-off window: nothing after it
    done = _run_with(skipper, SVC_START, {SKIP_ANNOTATION: at})
    assert done.status.to_status()["history"][0]["result"] == "Skipped"
    assert skipper.covered.holder("scalingpolicies", "web") is None


def _run_with(world: World, at: datetime, annotations: dict[str, str]) -> Any:
    world.now = at
    meta = {"name": "w1", "namespace": "ns", "annotations": annotations}
    result = asyncio.run(window_service.reconcile(meta, world.spec, world.ports, world.state))
    world.state.status.update(result.status.to_status())
    return result


# -- the CLI ---------------------------------------------------------------------------------


def test_cli_parses_the_verbs() -> None:
    args = build_parser(["scaling"]).parse_args(["scaling", "pause", "web", "--for", "1h"])
    assert (args.action, args.name, args.duration, args.namespace) == ("pause", "web", "1h", None)
    with pytest.raises(SystemExit):
        build_parser(["scaling"]).parse_args(["scaling", "pause", "web"])  # --for or --until
    args = build_parser(["window"]).parse_args(["window", "start", "mw", "-n", "x", "--for", "2h"])
    assert (args.action, args.namespace, args.duration) == ("start", "x", "2h")
    args = build_parser(["window"]).parse_args(["window", "skip", "mw", "--wait"])
    assert args.wait and args.at is None


def test_pause_end() -> None:
    now = datetime(2026, 3, 1, 12, 0, 0, 500000, tzinfo=UTC)
    ns = argparse.Namespace(duration="1h30m", until=None)
    assert scaling_cli.pause_end(ns, now) == datetime(2026, 3, 1, 13, 30, tzinfo=UTC)
    for bad in (argparse.Namespace(duration="soon", until=None),
                argparse.Namespace(duration=None, until="2026-03-01T11:00:00Z"),
                argparse.Namespace(duration=None, until="noon")):  # fmt: skip
        with pytest.raises(verbs.VerbError):
            scaling_cli.pause_end(bad, now)


def test_api_failures_are_one_clear_line() -> None:
    message = (
        'scalingpolicies.ops.stronghold.io "web" is forbidden: User '
        '"system:serviceaccount:t:viewer" cannot patch resource "scalingpolicies" in API group '
        '"ops.stronghold.io" in the namespace "t"'
    )
    text = verbs.failure(ApiError(403, "Forbidden", message), "patch", "p", "K", "t", "web")
    assert text.startswith('forbidden: User "system:serviceaccount:t:viewer" cannot patch')
    assert verbs.failure(ApiError(403, "Forbidden"), "patch", "scalingpolicies", "K", "t", "x") == (
        "forbidden: you cannot patch scalingpolicies in namespace t"
    )
    assert verbs.failure(ApiError(404, "NotFound"), "get", "p", "ScalingPolicy", "t", "x") == (
        "ScalingPolicy t/x not found"
    )


def test_cli_outcomes_read_the_operators_status() -> None:
    until = datetime(2026, 3, 1, 13, tzinfo=UTC)
    paused = {"pausedUntil": "2026-03-01T13:00:00Z", "lastDecision": {"reason": "Paused"}}
    assert scaling_cli._outcome(paused, until) is not None
    assert scaling_cli._outcome({"lastDecision": {"reason": "WithinBands"}}, until) is None
    assert scaling_cli._outcome({"lastDecision": {"reason": "WithinBands"}}, None) is not None
    assert scaling_cli._outcome(paused, None) is None
    open_ = {
        "handledStartNow": "v",
        "currentWindow": {"trigger": "v"},
        "conditions": [{"type": "Active", "status": "True", "message": "open"}],
    }
    assert window_cli._started(open_, "v") == (0, "open: open")
    assert window_cli._started({"handledStartNow": "other"}, "v") is None
    assert window_cli._started({"handledStartNow": "v"}, "v")[0] == 1  # type: ignore[index]
    skipped = {"handledSkip": "2026-03-01T01:00:00Z", "skipping": {"start": "2026-03-01T01:00:00Z"}}
    assert window_cli._skipped(skipped, "2026-03-01T01:00:00Z")[0] == 0  # type: ignore[index]
    assert (
        window_cli._skipped({"handledSkip": "2026-03-01T01:00:00Z"}, "2026-03-01T01:00:00Z")[0] == 1
    )  # type: ignore[index]
    with pytest.raises(verbs.VerbError, match="no upcoming window"):
        window_cli._skip_target(None, {})
    assert window_cli._skip_target("2026-03-01T02:00:00+01:00", {}) == "2026-03-01T01:00:00Z"
