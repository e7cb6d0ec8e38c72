"""Issue 17, defects 1, 7 and 10: bounded durations and ports, any error becomes InvalidSpec,
one bad ScalingPolicy never stops the others, and the scaling history stays small."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings

from stronghold_operator.handlers import scaling as handler
from stronghold_operator.logic import indexes as index_fns
from stronghold_operator.logic import scaling as sc
from stronghold_operator.models.backup import BackupScheduleSpec
from stronghold_operator.models.base import InvalidSpec, SpecModel, parse
from stronghold_operator.models.health import HealthPolicySpec
from stronghold_operator.models.maintenance import MaintenanceWindowSpec
from stronghold_operator.models.scaling import ScalingPolicySpec
from stronghold_operator.platforms import indexes
from stronghold_operator.services import scaling as service
from tests.unit.test_scaling_properties import Obs, policies, traces

HUGE = "99999999999h"
SCALING = {"targetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3}
HEALTH = {"checks": [{"name": "web", "http": {"url": "http://127.0.0.1:8000/"}}]}
BACKUP = {
    "schedule": "0 2 * * *",
    "database": {"host": "db", "name": "app", "user": "app"},
    "storage": {"persistentVolumeClaim": "backups"},
}
WINDOW = {"schedule": {"cron": "0 2 * * 0", "duration": "2h"}}


def _with(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``base`` with ``value`` set at the dotted ``path``."""
    import copy

    out = copy.deepcopy(base)
    node = out
    *parents, last = path.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return out


def _refusal(model: type[SpecModel], spec: dict[str, Any]) -> InvalidSpec:
    """The InvalidSpec that parse() must raise for ``spec``."""
    with pytest.raises(InvalidSpec) as err:
        parse(model, spec)
    return err.value


@pytest.mark.parametrize(
    ("model", "spec", "field"),
    [
        (ScalingPolicySpec, _with(SCALING, "interval", HUGE), "interval"),
        (ScalingPolicySpec, _with(SCALING, "scaleDown.sustainedFor", HUGE), "scaleDown"),
        (ScalingPolicySpec, _with(SCALING, "metrics.maxAge", HUGE), "metrics"),
        (HealthPolicySpec, _with(HEALTH, "interval", HUGE), "interval"),
        (BackupScheduleSpec, _with(BACKUP, "staleAfter", HUGE), "staleAfter"),
        (MaintenanceWindowSpec, _with(WINDOW, "schedule.duration", HUGE), "schedule"),
        (MaintenanceWindowSpec, _with(WINDOW, "preChecks.leadTime", HUGE), "preChecks"),
        (
            MaintenanceWindowSpec,
            {"schedule": {"start": "9999-12-31T23:59:00Z", "duration": "744h"}},
            "schedule",
        ),
        (MaintenanceWindowSpec, {**WINDOW, "exclusions": [{"date": "9999-12-31"}]}, "exclusions"),
    ],
)
def test_duration_overflow_is_invalid_spec_naming_the_field(
    model: type[SpecModel], spec: dict[str, Any], field: str
) -> None:
    assert _refusal(model, spec).field.startswith(field)


def test_any_validator_error_becomes_invalid_spec_naming_the_field() -> None:
    from pydantic import field_validator

    class Odd(SpecModel):
        n: int = 0

        @field_validator("n")
        @classmethod
        def _boom(cls, v: int) -> int:
            raise OverflowError("too big")

    class Outer(SpecModel):
        inner: Odd

    refused = _refusal(Outer, {"inner": {"n": 1}})
    # A decorator validator of a field is reported at the enclosing field (still named).
    assert refused.field.startswith("inner")
    assert "OverflowError" in refused.message


@pytest.mark.parametrize("interval", ["1ms", "999ms", "0s", "2h"])
def test_scaling_interval_bounds(interval: str) -> None:
    assert _refusal(ScalingPolicySpec, _with(SCALING, "interval", interval)).field == "interval"


def test_scaling_interval_floor_allows_the_e2e_intervals() -> None:
    for interval in ("1s", "2s", "5s", "15s", "1h"):
        parse(ScalingPolicySpec, _with(SCALING, "interval", interval))


def test_sustained_for_has_a_maximum() -> None:
    parse(ScalingPolicySpec, _with(SCALING, "scaleDown.sustainedFor", "168h"))
    refused = _refusal(ScalingPolicySpec, _with(SCALING, "scaleDown.sustainedFor", "8760h"))
    assert refused.field == "scaleDown.sustainedFor"


@pytest.mark.parametrize(
    ("model", "spec", "field"),
    [
        (
            HealthPolicySpec,
            _with(HEALTH, "checks", [{"name": "a", "http": {"url": "http://example.com:99999/"}}]),
            "checks[0].http.url",
        ),
        (
            HealthPolicySpec,
            _with(HEALTH, "checks", [{"name": "a", "http": {"urls": ["http://example.com:0/"]}}]),
            "checks[0].http.urls",
        ),
        (
            HealthPolicySpec,
            _with(HEALTH, "alerting", {"webhook": {"url": "https://example.com:70000/x"}}),
            "alerting.webhook",
        ),
        (
            HealthPolicySpec,
            _with(HEALTH, "checks", [{"name": "m", "memcached": {"address": "cache:99999"}}]),
            "checks[0].memcached.address",
        ),
        (
            ScalingPolicySpec,
            _with(
                SCALING,
                "targetRef",
                {
                    "kind": "ComposeService",
                    "project": "p",
                    "service": "s",
                    "dockerHost": "tcp://127.0.0.1:99999",
                },
            ),
            "targetRef.dockerHost",
        ),
        (
            MaintenanceWindowSpec,
            _with(
                WINDOW, "postChecks", {"http": [{"name": "a", "url": "http://example.com:99999/"}]}
            ),
            "postChecks.http[0].url",
        ),
    ],
)
def test_port_out_of_range_is_invalid_spec_naming_the_field(
    model: type[SpecModel], spec: dict[str, Any], field: str
) -> None:
    refused = _refusal(model, spec)
    assert refused.field.startswith(field)
    assert "port" in refused.message


# -- one bad ScalingPolicy never stops find_conflict for the others --------------------------


def _policy(name: str, uid: str, created: str, spec: dict[str, Any]) -> dict[str, Any]:
    meta = {"name": name, "namespace": "ns", "uid": uid, "creationTimestamp": created}
    return {"metadata": meta, "spec": spec}


@pytest.mark.parametrize(
    "bad",
    [
        _with(SCALING, "interval", HUGE),
        _with(SCALING, "scaleDown.sustainedFor", HUGE),
        _with(SCALING, "interval", "1ms"),
        {"targetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": "many"},
        {},
    ],
)
def test_bad_sibling_never_stops_find_conflict(
    bad: dict[str, Any],
) -> None:
    older = _policy("old", "u1", "2026-01-01T00:00:00Z", SCALING)
    broken = _policy("broken", "u0", "2025-01-01T00:00:00Z", bad)
    mine = _policy("mine", "u2", "2026-02-01T00:00:00Z", SCALING)

    def lookup(items: list[dict[str, Any]]) -> indexes.IndexedAutoscalers:
        claims: dict[Any, list[Any]] = {}
        for item in items:  # what kopf makes of the index function's results
            for key, claim in index_fns.scaling_claim(item).items():
                claims.setdefault(key, []).append(claim)
        return indexes.IndexedAutoscalers({}, claims)

    policy = parse(ScalingPolicySpec, SCALING)
    found = asyncio.run(
        service.find_conflict(lookup([broken, older, mine]), policy, mine["metadata"])
    )
    assert found is not None and "ns/old" in found
    # The broken one is older than both but is skipped, not taken as the target's owner.
    alone = asyncio.run(service.find_conflict(lookup([broken, older]), policy, older["metadata"]))
    assert alone is None


# -- bounded sample history (defect 7) -------------------------------------------------------

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _run(policy: ScalingPolicySpec, steps: int, load: float) -> tuple[int, list[sc.Decision]]:
    """Drive the engine as the handler does; return the largest history kept and decisions."""
    samples: list[sc.Sample] = []
    state = sc.ScalingState()
    most, decisions = 0, []
    for k in range(steps):
        now = T0 + k * policy.interval
        samples = sc.trim([*samples, sc.Sample(now, load, load)], policy, now)
        most = max(most, len(samples))
        d = sc.decide(policy, samples, 3, now, state)
        decisions.append(d)
        state = sc.next_state(state, d)
    return most, decisions


def test_history_is_bounded_for_a_year_long_sustained_for() -> None:
    policy = parse(ScalingPolicySpec, _with(SCALING, "interval", "5s"))
    # The model refuses 8760h; the engine must not depend on that to stay small.
    year = policy.model_copy(
        update={
            "scale_down": policy.scale_down.model_copy(
                update={"sustained_for": timedelta(hours=8760)}
            )
        }
    )
    most, decisions = _run(year, 3000, 10.0)  # 4h10m of 5 s observations
    assert most <= sc.MAX_SAMPLES
    assert decisions[-1].below_since == T0  # the timer still runs from the first sample
    assert decisions[-1].reason == sc.STABILIZING


def test_sustained_for_30m_is_judged_right_with_a_short_history() -> None:
    policy = parse(
        ScalingPolicySpec,
        {**SCALING, "interval": "5s", "scaleDown": {"sustainedFor": "30m", "cooldown": "0s"}},
    )
    most, decisions = _run(policy, 400, 10.0)
    assert most <= sc.MAX_SAMPLES
    first_down = next(i for i, d in enumerate(decisions) if d.action == sc.SCALE_DOWN)
    assert first_down * policy.interval == timedelta(minutes=30)


def test_stabilization_is_judged_right_with_a_short_history() -> None:
    policy = parse(
        ScalingPolicySpec,
        {**SCALING, "maxReplicas": 10, "interval": "1s", "scaleUp": {"stabilizationWindow": "1h"}},
    )
    most, decisions = _run(policy, 3700, 95.0)
    assert most <= sc.MAX_SAMPLES
    first_up = next(i for i, d in enumerate(decisions) if d.action == sc.SCALE_UP)
    assert first_up * policy.interval == timedelta(hours=1)


@settings(max_examples=100, deadline=None)
@given(policy=policies(), trace=traces)
def test_short_history_decides_as_the_full_history(
    policy: ScalingPolicySpec, trace: list[Obs]
) -> None:
    """Trimming to MAX_SAMPLES changes no decision: the runs are carried by ScalingState."""
    tick = timedelta(seconds=15)

    def run(trimmed: bool) -> list[tuple[Any, ...]]:
        state, kept, replicas, out = sc.ScalingState(), [], policy.max_replicas, []
        for k, obs in enumerate(trace):
            now = T0 + k * tick
            if obs is not None:
                kept.append(sc.Sample(now, obs[0], obs[1]))
            if trimmed:
                kept = sc.trim(kept, policy, now)
            d = sc.decide(policy, kept, replicas, now, state)
            out.append((d.action, d.reason, d.to_replicas, d.below_since))
            replicas = d.to_replicas if d.acts else replicas
            state = sc.next_state(state, d)
        return out

    assert run(True) == run(False)


def test_validate_handler_writes_invalid_spec_for_an_overflowing_interval() -> None:
    import kopf

    spec = _with(SCALING, "interval", HUGE)
    body: Any = {"metadata": {"name": "p", "namespace": "ns", "generation": 1}, "spec": spec}
    patch = kopf.Patch()
    with pytest.raises(kopf.PermanentError):
        asyncio.run(handler.validate(body=body, spec=spec, status={}, patch=patch))
    ready = next(c for c in patch["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert ready["message"].startswith("spec.interval: ")
