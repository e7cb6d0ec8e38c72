"""Remediation: the pure decision (logic/remediation.py), the spec's validation, and the
round spending its budget and telling the result (services/health.py on in-memory fakes)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stronghold_operator import conditions as cond
from stronghold_operator.logic import remediation as logic
from stronghold_operator.models.base import InvalidSpec, parse
from stronghold_operator.models.health import HealthPolicySpec, RemediationAction
from stronghold_operator.probes.base import ProbeResult
from stronghold_operator.services import health as service
from tests.unit.test_health_service import T0, WHERE, World

CHECKS = [
    {"name": "web", "http": {"url": "http://web.shop.svc:8080/healthz"}},
    {"name": "db", "postgres": {"host": "db.shop.svc"}},
    {"name": "cache", "memcached": {"address": "cache:11211"}},
]


def spec(*actions: dict[str, Any], dry_run: bool = False) -> HealthPolicySpec:
    body: dict[str, Any] = {
        "interval": "30s",
        "failureThreshold": 1,
        "checks": CHECKS,
        "remediation": {"dryRun": dry_run, "actions": list(actions)},
    }
    return parse(HealthPolicySpec, body)


def restart(**extra: Any) -> dict[str, Any]:
    return {
        "name": "restart-web",
        "when": {"checks": ["web"]},
        "rolloutRestart": {"name": "web"},
        **extra,
    }


def incident(minutes_ago: float = 10, **extra: Any) -> dict[str, Any]:
    started = T0 - timedelta(minutes=minutes_ago)
    return {"id": "stack-1", "rootCause": "web", "startedAt": cond.rfc3339(started), **extra}


def test_an_action_bound_to_a_failing_check_is_due() -> None:
    d = logic.due(spec(restart()).remediation, incident(), ["web"], None, T0)
    assert d is not None and d.attempt == 1 and not d.dry_run
    assert d.what == "rollout restart of Deployment web"


def test_not_bound_when_neither_its_checks_fail_nor_the_root_cause_is_its() -> None:
    s = spec(restart(when={"checks": ["web"], "rootCauses": ["db"]})).remediation
    assert logic.due(s, incident(rootCause="cache"), ["cache"], None, T0) is None
    assert logic.due(s, incident(rootCause="db"), ["cache"], None, T0) is not None


def test_no_incident_no_spec_or_a_recovering_incident_takes_no_action() -> None:
    s = spec(restart()).remediation
    assert logic.due(None, incident(), ["web"], None, T0) is None
    assert logic.due(s, None, ["web"], None, T0) is None
    recovering = incident(recoveringSince=cond.rfc3339(T0))
    assert logic.due(s, recovering, ["web"], None, T0) is None


def test_never_during_maintenance_unless_asked() -> None:
    assert logic.due(spec(restart()).remediation, incident(), ["web"], "mw", T0) is None
    asked = spec(restart(duringMaintenance=True)).remediation
    assert logic.due(asked, incident(), ["web"], "mw", T0) is not None


def test_only_after_the_incident_is_old_enough() -> None:
    s = spec(restart(after="5m")).remediation
    assert logic.due(s, incident(minutes_ago=4), ["web"], None, T0) is None
    assert logic.due(s, incident(minutes_ago=5), ["web"], None, T0) is not None


def test_max_attempts_and_cooldown_bound_the_attempts() -> None:
    s = spec(restart(maxAttempts=2, cooldown="1m")).remediation
    assert s is not None
    inc = incident()
    first = logic.due(s, inc, ["web"], None, T0)
    assert first is not None
    inc["remediation"] = logic.spend(inc, first, T0)
    assert inc["remediation"] == [
        {"action": "restart-web", "attempts": 1, "lastAt": cond.rfc3339(T0)}
    ]
    assert logic.due(s, inc, ["web"], None, T0 + timedelta(seconds=59)) is None  # cooldown
    second = logic.due(s, inc, ["web"], None, T0 + timedelta(minutes=1))
    assert second is not None and second.attempt == 2
    inc["remediation"] = logic.spend(inc, second, T0 + timedelta(minutes=1))
    assert logic.due(s, inc, ["web"], None, T0 + timedelta(hours=5)) is None  # spent


def test_dry_run_is_inherited_and_an_action_may_override_it() -> None:
    s = spec(restart(), dry_run=True).remediation
    d = logic.due(s, incident(), ["web"], None, T0)
    assert d is not None and d.dry_run
    assert "dry run, would do a rollout restart of Deployment web" in logic.message(d, "i", "x")
    s = spec(restart(dryRun=False), dry_run=True).remediation
    d = logic.due(s, incident(), ["web"], None, T0)
    assert d is not None and not d.dry_run


def test_one_action_per_round_in_spec_order_then_the_next() -> None:
    flush = {"name": "flush", "when": {"checks": ["web"]}, "flushMemcached": {"check": "cache"}}
    s = spec(restart(), flush).remediation
    inc = incident()
    first = logic.due(s, inc, ["web"], None, T0)
    assert first is not None and first.action.name == "restart-web"
    inc["remediation"] = logic.spend(inc, first, T0)
    second = logic.due(s, inc, ["web"], None, T0)
    assert second is not None and second.action.name == "flush"
    assert second.what == "flush of the Memcached of check cache"


@pytest.mark.parametrize(
    ("action", "words"),
    [
        (restart(when={"checks": ["nope"]}), "unknown check 'nope'"),
        (
            {"name": "k", "when": {"checks": ["db"]}, "terminateQueries": {"check": "web"}},
            "not a postgres",
        ),
        (
            {"name": "f", "when": {"checks": ["db"]}, "flushMemcached": {"check": "db"}},
            "not a memcached",
        ),
        ({"name": "x", "when": {"checks": ["db"]}}, "exactly one"),
        (restart(when={}), "set checks or rootCauses"),
        (restart(maxAttempts=0), "maxAttempts"),
    ],
)
def test_invalid_actions_are_rejected_naming_the_field(action: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidSpec) as exc:
        spec(action)
    assert words in str(exc.value)


def test_duplicate_action_names_are_rejected() -> None:
    with pytest.raises(InvalidSpec, match="duplicate names"):
        spec(restart(), restart())


@given(
    attempts=st.integers(1, 10),
    cooldown_s=st.integers(0, 600),
    steps=st.lists(st.integers(1, 400), min_size=1, max_size=40),
)
def test_never_more_than_max_attempts_nor_closer_than_the_cooldown(
    attempts: int, cooldown_s: int, steps: list[int]
) -> None:
    s = spec(restart(maxAttempts=attempts, cooldown=f"{cooldown_s}s")).remediation
    inc = incident()
    now, taken = T0, []
    for step in steps:
        now += timedelta(seconds=step)
        d = logic.due(s, inc, ["web"], None, now)
        if d is not None:
            inc["remediation"] = logic.spend(inc, d, now)
            taken.append(now)
    assert len(taken) <= attempts
    assert all((b - a).total_seconds() >= cooldown_s for a, b in itertools.pairwise(taken))


# --- the round ------------------------------------------------------------------------------


@dataclass
class FakeRemedy:
    calls: list[tuple[str, str, bool]] = field(default_factory=list)

    async def __call__(
        self,
        policy: HealthPolicySpec,
        action: RemediationAction,
        namespace: str,
        secrets: Mapping[str, str],
        dry_run: bool,
    ) -> tuple[bool, str]:
        self.calls.append((action.name, namespace, dry_run))
        return True, "dry run" if dry_run else "restarted"


WEB_DOWN = ProbeResult.failed("Unreachable", "connection refused")
UP = ProbeResult(latency_ms=1, numbers={"getHits": 90, "getMisses": 10, "evictions": 0})


async def _round(
    w: World,
    policy: HealthPolicySpec,
    current: Mapping[str, Any],
    remedy: FakeRemedy,
    notes: list[Any],
) -> service.Round:
    ports = service.Ports(
        **{
            **w.ports().__dict__,
            "remedy": remedy,
            "note": lambda *a: notes.append(a),
        }
    )
    return await service.run_round(policy, current, WHERE, ports)


async def test_the_round_spends_the_budget_in_status_and_records_the_result() -> None:
    w, remedy, notes = World(), FakeRemedy(), []
    w.prober.results = {"web": WEB_DOWN, "db": WEB_DOWN, "cache": UP}
    policy = spec(restart(maxAttempts=1))
    first = await _round(w, policy, {}, remedy, notes)
    inc = first.fields["incident"]
    assert inc["remediation"][0]["action"] == "restart-web"
    await w.background()
    assert remedy.calls == [("restart-web", "shop", False)]
    ((name, type_, reason, message),) = notes
    assert name == inc["incidentName"] and (type_, reason) == ("Normal", "Remediated")
    assert "rollout restart of Deployment web" in message and "restarted" in message
    assert ("Normal", "Remediated", message) in w.events
    # The next round continues from the written status: the budget is spent (a restarted
    # operator reads the same status), so nothing runs again.
    second = await _round(w, policy, first.fields, remedy, notes)
    await w.background()
    assert len(remedy.calls) == 1 and second.fields["incident"]["remediation"][0]["attempts"] == 1


async def test_a_grouped_incident_tells_its_remediation_in_its_own_events_only() -> None:
    w, remedy, notes = World(), FakeRemedy(), []
    w.prober.results = {"web": WEB_DOWN, "db": WEB_DOWN, "cache": UP}
    policy = spec(restart(maxAttempts=1))
    first = await _round(w, policy, {}, remedy, notes)
    await w.background()
    # The same incident, recorded on a storm's lead Incident, with a fresh budget.
    grouped = {**first.fields["incident"], "incidentName": "lead", "grouped": True}
    grouped.pop("remediation")
    notes.clear()
    await _round(w, policy, {**first.fields, "incident": grouped}, remedy, notes)
    await w.background()
    assert len(remedy.calls) == 2 and notes == []  # nothing on the lead's timeline
    assert [e[1] for e in w.events].count("Remediated") == 2  # the policy's own Events


async def test_during_maintenance_nothing_runs_and_nothing_is_spent() -> None:
    w, remedy, notes = World(hold="mw"), FakeRemedy(), []
    w.prober.results = {"web": WEB_DOWN, "db": WEB_DOWN, "cache": UP}
    r = await _round(w, spec(restart()), {}, remedy, notes)
    await w.background()
    assert remedy.calls == [] and notes == []
    assert "remediation" not in r.fields["incident"]


def test_a_compose_restart_is_an_action_of_its_own() -> None:
    compose = {
        "name": "restart-compose",
        "when": {"rootCauses": ["web"]},
        "composeRestart": {"project": "stack", "service": "web"},
    }
    s = spec(compose).remediation
    d = logic.due(s, incident(), [], None, T0)
    assert d is not None and d.action.kind == "ComposeRestart"
    assert d.what == "restart of Compose service stack/web"
    with pytest.raises(InvalidSpec, match="exactly one"):
        spec({**compose, "rolloutRestart": {"name": "web"}})


# --- verification after an action -----------------------------------------------------------


def pending(due_in_s: float, action: str = "restart-web", attempts: int = 1) -> dict[str, Any]:
    return incident(
        remediation=[
            {
                "action": action,
                "attempts": attempts,
                "lastAt": cond.rfc3339(T0),
                "verifyAt": cond.rfc3339(T0 + timedelta(seconds=due_in_s)),
            }
        ]
    )


AFTER = timedelta(seconds=15)


def test_verify_after_defaults_to_15s_and_never_exceeds_the_interval() -> None:
    assert spec(restart()).verify_after() == AFTER
    body: dict[str, Any] = {"interval": "10s", "checks": CHECKS}
    assert parse(HealthPolicySpec, body).verify_after() == timedelta(seconds=10)
    body["remediation"] = {"verifyAfter": "1m", "actions": [restart()]}
    assert parse(HealthPolicySpec, body).verify_after() == timedelta(seconds=10)
    body["remediation"]["verifyAfter"] = "0s"
    with pytest.raises(InvalidSpec, match="verifyAfter"):
        parse(HealthPolicySpec, body)


def test_an_action_that_runs_is_to_be_verified_a_dry_run_is_not() -> None:
    d = logic.due(spec(restart()).remediation, incident(), ["web"], None, T0)
    assert d is not None
    (entry,) = logic.spend(incident(), d, T0, AFTER)
    assert entry["verifyAt"] == cond.rfc3339(T0 + AFTER)
    dry = logic.due(spec(restart(), dry_run=True).remediation, incident(), ["web"], None, T0)
    assert dry is not None
    assert "verifyAt" not in logic.spend(incident(), dry, T0, AFTER)[0]


def test_a_due_verification_is_judged_once_on_this_rounds_checks() -> None:
    inc = pending(15)
    early = logic.verify(inc, [], {}, AFTER, T0 + timedelta(seconds=10))
    assert (
        early.verdicts == []
        and early.remediation[0]["verifyAt"] == inc["remediation"][0]["verifyAt"]
    )
    assert logic.next_due(inc, {}, T0 + timedelta(seconds=10)) == 5
    ok = logic.verify(inc, [], {}, AFTER, T0 + timedelta(seconds=15))
    (verdict,) = ok.verdicts
    assert verdict.verified and verdict.reason == "RemediationVerified"
    assert "Verified: every check healthy" in verdict.message("stack-1")
    assert "verifyAt" not in ok.remediation[0] and ok.remediation[0]["attempts"] == 1
    assert logic.next_due({**inc, "remediation": ok.remediation}, {}, T0) is None
    bad = logic.verify(inc, ["web", "db"], {}, AFTER, T0 + timedelta(seconds=16))
    (verdict,) = bad.verdicts
    assert not verdict.verified and verdict.reason == "RemediationStillFailing"
    assert "StillFailing: web, db still failing" in verdict.message("stack-1")


def test_a_running_action_waits_a_failed_one_is_not_verified_a_slow_one_later() -> None:
    k = logic.key("stack-1", "restart-web", 1)
    late = T0 + timedelta(seconds=60)
    running = logic.verify(pending(15), ["web"], {k: logic.Outcome()}, AFTER, late)
    assert running.verdicts == [] and "verifyAt" in running.remediation[0]
    assert logic.next_due(pending(15), {k: logic.Outcome()}, late) is None  # no busy rounds
    failed = logic.Outcome(True, False, T0 + timedelta(seconds=1))
    dropped = logic.verify(pending(15), ["web"], {k: failed}, AFTER, late)
    assert dropped.verdicts == [] and "verifyAt" not in dropped.remediation[0]
    assert dropped.settled == [k]
    slow = logic.Outcome(True, True, T0 + timedelta(seconds=40))  # finished after verifyAt
    at_due = logic.verify(pending(15), [], {k: slow}, AFTER, T0 + timedelta(seconds=20))
    assert at_due.verdicts == []
    assert at_due.remediation[0]["verifyAt"] == cond.rfc3339(T0 + timedelta(seconds=55))
    assert len(logic.verify(pending(15), [], {k: slow}, AFTER, late).verdicts) == 1


def test_an_incident_resolving_judges_what_is_pending_now() -> None:
    closing = logic.verify(pending(15), [], {}, AFTER, T0, closing=True)
    assert [v.verified for v in closing.verdicts] == [True]


def test_failing_now_is_this_rounds_probes() -> None:
    checks = [
        {"name": "a", "state": "Critical", "observedState": "Healthy"},  # recovering
        {"name": "b", "state": "Healthy", "observedState": "Critical"},  # below the threshold
        {"name": "c", "state": "Warning"},
    ]
    assert logic.failing_now(checks) == ["b", "c"]


@dataclass
class Clock:
    now: Any = T0

    def __call__(self) -> Any:
        return self.now


async def _verifying_round(
    w: World,
    policy: HealthPolicySpec,
    current: Mapping[str, Any],
    notes: list[Any],
    clock: Clock,
    outcomes: dict[str, logic.Outcome],
    wakes: list[float],
) -> service.Round:
    ports = service.Ports(
        **{
            **w.ports().__dict__,
            "remedy": FakeRemedy(),
            "note": lambda *a: notes.append(a),
            "clock": clock,
            "outcomes": outcomes,
            "wake": wakes.append,
        }
    )
    return await service.run_round(policy, current, WHERE, ports)


WEB_UP = ProbeResult(latency_ms=1)


@pytest.mark.parametrize("recovered", [True, False])
async def test_the_round_after_an_action_verifies_it_on_the_timeline(recovered: bool) -> None:
    w, notes, clock, outcomes, wakes = World(), [], Clock(), {}, []  # type: ignore[var-annotated]
    w.prober.results = {"web": WEB_DOWN, "db": WEB_DOWN, "cache": UP}
    policy = spec(restart(maxAttempts=1))
    first = await _verifying_round(w, policy, {}, notes, clock, outcomes, wakes)
    assert first.fields["incident"]["remediation"][0]["verifyAt"] == cond.rfc3339(T0 + AFTER)
    # While the action runs, no round is planned for it (a slow one would make rounds that
    # judge nothing): its completion asks for the verifying round, verifyAfter later.
    assert first.delay == 30 and wakes == []
    await w.background()
    assert wakes == [15.0]
    # After a restart (nothing in memory) the status alone plans it.
    assert logic.next_due(first.fields["incident"], {}, T0) == 15
    assert list(outcomes.values()) == [logic.Outcome(True, True, T0)]
    clock.now = T0 + timedelta(seconds=15)
    if recovered:
        w.prober.results = {"web": WEB_UP, "db": WEB_UP, "cache": UP}
    else:
        w.prober.results = {"web": WEB_DOWN, "db": WEB_UP, "cache": UP}
    second = await _verifying_round(w, policy, first.fields, notes, clock, outcomes, wakes)
    name, type_, reason, message = notes[-1]
    assert name == first.fields["incident"]["incidentName"]
    if recovered:
        assert (type_, reason) == ("Normal", "RemediationVerified")
    else:
        assert (type_, reason) == ("Warning", "RemediationStillFailing")
        assert "StillFailing: web still failing" in message
    assert (type_, reason, message) in w.events
    assert outcomes == {} and second.delay == 30
    inc = second.fields.get("incident") or second.fields["recentIncidents"][0]
    assert "verifyAt" not in inc["remediation"][0]
    clock.now += timedelta(seconds=30)
    await _verifying_round(w, policy, second.fields, notes, clock, outcomes, wakes)
    verdicts = [n for n in notes if n[2] in ("RemediationVerified", "RemediationStillFailing")]
    assert len(verdicts) == 1  # judged once
