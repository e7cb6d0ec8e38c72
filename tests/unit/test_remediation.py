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
