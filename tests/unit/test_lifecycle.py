"""logic/lifecycle: Reconciling and Stalled per kind, and the writers that add them.

What each kind's conditions mean to kstatus, Argo CD and Flux (docs/gitops.md) is decided
in one pure module; these tests hold it to that table, check the status writer adds it to
every write (never both True, never an Event of its own), and that a pass acknowledges a new
generation first.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from stronghold_operator import conditions as cond
from stronghold_operator.logic import lifecycle
from stronghold_operator.models.scaling import ScalingPolicyStatus
from stronghold_operator.models.status import Condition
from stronghold_operator.runtime import scheduler as sched
from stronghold_operator.runtime import status as writer
from tests.support import kstatus

T0 = datetime(2026, 12, 6, 1, 0, tzinfo=UTC)
C = cond.Condition


def derived(kind: str, conditions: list[cond.Condition], **fields: Any) -> dict[str, Any]:
    view = {c.type: lifecycle.Seen(c.status, c.reason, c.message) for c in conditions}
    out = lifecycle.derive(kind, view, fields)
    return {c.type: (c.status, c.reason) for c in out}


READY = C("Ready", "True", "Reconciled", "ok")


@pytest.mark.parametrize("kind", list(lifecycle.RULES))
def test_every_kind_reads_first_sight_invalid_spec_and_done(kind: str) -> None:
    first = derived(kind, cond.unknown_all(["Ready"]))
    assert first == {"Reconciling": ("True", "Initializing"), "Stalled": ("False", "AsExpected")}
    invalid = C("Ready", "False", "InvalidSpec", "spec.interval: must be at least 5s")
    assert derived(kind, [invalid]) == {
        "Reconciling": ("False", "Stalled"),
        "Stalled": ("True", "InvalidSpec"),
    }
    assert derived(kind, [READY]) == {
        "Reconciling": ("False", "Idle"),
        "Stalled": ("False", "AsExpected"),
    }


def test_stalled_carries_readys_message_which_names_the_field() -> None:
    ready = C("Ready", "False", "InvalidSpec", "spec.checks[0].http.url: not a URL")
    view = {"Ready": lifecycle.Seen(ready.status, ready.reason, ready.message)}
    stalled = [c for c in lifecycle.derive("HealthPolicy", view, {}) if c.type == "Stalled"]
    assert stalled[0].message == "spec.checks[0].http.url: not a URL"


@pytest.mark.parametrize(
    ("kind", "reason", "stalled"),
    [
        ("HealthPolicy", "SecretMissing", True),
        ("HealthPolicy", "Suspended", False),
        ("ScalingPolicy", "TargetNotFound", True),
        ("ScalingPolicy", "MissingRequests", True),
        ("ScalingPolicy", "ConflictingAutoscaler", True),
        ("ScalingPolicy", "TargetUnreachable", False),  # a passing fault: it may come back
        ("BackupSchedule", "StorageMissing", True),
        ("BackupSchedule", "SecretMissing", True),
        ("BackupSchedule", "BackupFailed", False),  # the next slot tries again
        ("MaintenanceWindow", "Suspended", False),
    ],
)
def test_which_not_ready_reasons_stall_each_kind(kind: str, reason: str, stalled: bool) -> None:
    out = derived(kind, [C("Ready", "False", reason, "why")])
    assert (out["Stalled"][0] == "True") is stalled
    assert out["Reconciling"][0] == "False"  # never both True; Ready=False alone is not work


def test_scaling_reconciles_while_its_last_step_settles() -> None:
    active = C("ScalingActive", "True", "Active", "scale up")
    step = {"action": "ScaleUp", "from": 2, "to": 4}
    assert derived("ScalingPolicy", [READY, active], lastDecision=step)["Reconciling"] == (
        "True",
        "ScaleStepInProgress",
    )
    hold = {"action": "Hold", "from": 4, "to": 4}
    assert derived("ScalingPolicy", [READY, active], lastDecision=hold)["Reconciling"][0] == "False"
    dry = C("ScalingActive", "False", "DryRun", "dry run")
    assert derived("ScalingPolicy", [READY, dry], lastDecision=step)["Reconciling"][0] == "False"


def test_backup_reconciles_while_a_job_runs() -> None:
    running = [{"name": "db-202612060200", "kind": "backup"}]
    assert derived("BackupSchedule", [READY], active=running)["Reconciling"] == (
        "True",
        "JobsRunning",
    )
    assert derived("BackupSchedule", [READY], active=[])["Reconciling"][0] == "False"
    # A failed backup with a retry running is still work in flight, not stalled.
    failed = C("Ready", "False", "BackupFailed", "pg_dump exited 1")
    assert derived("BackupSchedule", [failed], active=running)["Reconciling"][0] == "True"


@pytest.mark.parametrize(
    ("pre", "active", "post", "reason"),
    [
        (("Unknown", "Running"), ("False", "NotInWindow"), ("Unknown", "NotRunYet"), "PreChecks"),
        (("True", "Passed"), ("True", "WindowOpen"), ("Unknown", "NotRunYet"), "WindowOpen"),
        (("True", "Passed"), ("False", "Ended"), ("Unknown", "Running"), "PostChecks"),
        (("Unknown", "NotRunYet"), ("False", "NotInWindow"), ("True", "Passed"), None),
        (("False", "Failed"), ("False", "Skipped"), ("Unknown", "NotRunYet"), None),
    ],
)
def test_window_reconciles_from_pre_checks_to_post_checks(
    pre: tuple[str, str], active: tuple[str, str], post: tuple[str, str], reason: str | None
) -> None:
    conditions = [
        READY,
        C("PreChecksPassed", pre[0], pre[1], "m"),  # type: ignore[arg-type]
        C("Active", active[0], active[1], "m"),  # type: ignore[arg-type]
        C("PostChecksPassed", post[0], post[1], "m"),  # type: ignore[arg-type]
    ]
    got = derived("MaintenanceWindow", conditions)["Reconciling"]
    if reason is None:
        assert got[0] == "False"
    else:
        assert got[0] == "True" and got[1].startswith(reason)


def test_unknown_kind_gets_nothing_and_explicit_conditions_win() -> None:
    assert lifecycle.complete("Pod", [], [READY], {}) == [READY]
    ack = lifecycle.acknowledge(4)
    done = lifecycle.complete("HealthPolicy", [], [READY, *ack], {})
    assert done == [READY, *ack]
    assert ack[0].type == "Reconciling" and ack[0].status == "True"
    assert "generation 4" in ack[0].message


def test_complete_reads_conditions_as_the_write_leaves_them() -> None:
    before = [{"type": "Ready", "status": "False", "reason": "InvalidSpec", "message": "x"}]
    out = {c.type: c.status for c in lifecycle.complete("ScalingPolicy", before, [READY], {})}
    assert out == {"Ready": "True", "Reconciling": "False", "Stalled": "False"}


def test_unobserved() -> None:
    assert lifecycle.unobserved({"metadata": {"generation": 1}})
    assert lifecycle.unobserved(
        {"metadata": {"generation": 2}, "status": {"observedGeneration": 1}}
    )
    assert not lifecycle.unobserved(
        {"metadata": {"generation": 2}, "status": {"observedGeneration": 2}}
    )


# --- the writers --------------------------------------------------------------------------


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {"patches": [], "events": []}

    async def patch_status(_: Any, plural: str, ns: str, name: str, delta: Any) -> None:
        out["patches"].append(delta)

    monkeypatch.setattr(writer, "patch_status", patch_status)
    monkeypatch.setattr(writer.kopf, "event", lambda _, **kw: out["events"].append(kw))
    return out


def body(generation: int = 1, status: dict[str, Any] | None = None) -> Any:
    meta = {"name": "p", "namespace": "ns", "uid": "u1", "generation": generation}
    return {"kind": "ScalingPolicy", "metadata": meta, "status": status or {}}


def typed(*conditions: cond.Condition) -> ScalingPolicyStatus:
    return ScalingPolicyStatus(
        conditions=[
            Condition(type=c.type, status=c.status, reason=c.reason, message=c.message)
            for c in conditions
        ]
    )


def test_write_status_adds_the_derived_conditions_and_kstatus_reads_them(
    captured: dict[str, list[Any]],
) -> None:
    b = body()
    first = asyncio.run(
        writer.write_status(None, "scalingpolicies", b, typed(*cond.unknown_all(["Ready"])), T0)  # type: ignore[arg-type]
    )
    assert kstatus.compute({**b, "status": first}).status == kstatus.IN_PROGRESS
    done = asyncio.run(
        writer.write_status(None, "scalingpolicies", b, typed(READY), T0, first)  # type: ignore[arg-type]
    )
    types = {c["type"]: c["status"] for c in done["conditions"]}
    assert types["Reconciling"] == "False" and types["Stalled"] == "False"
    assert kstatus.compute({**b, "status": done}).status == kstatus.CURRENT
    bad = typed(C("Ready", "False", "TargetNotFound", "Deployment ns/web not found"))
    stalled = asyncio.run(
        writer.write_status(None, "scalingpolicies", b, bad, T0, done)  # type: ignore[arg-type]
    )
    assert kstatus.compute({**b, "status": stalled}) == kstatus.Result(
        kstatus.FAILED, "TargetNotFound", "Deployment ns/web not found"
    )
    # Ready's transition is told; Reconciling and Stalled are not told again.
    assert [e["reason"] for e in captured["events"]] == ["Reconciled", "TargetNotFound"]


def test_acknowledge_moves_observed_generation_with_reconciling(
    captured: dict[str, list[Any]],
) -> None:
    done = asyncio.run(
        writer.write_status(None, "scalingpolicies", body(1), typed(READY), T0)  # type: ignore[arg-type]
    )
    assert asyncio.run(writer.acknowledge(None, "scalingpolicies", body(1), done, T0)) is None  # type: ignore[arg-type]
    acked = asyncio.run(writer.acknowledge(None, "scalingpolicies", body(2), done, T0))  # type: ignore[arg-type]
    assert acked is not None and acked["observedGeneration"] == 2
    assert kstatus.compute({**body(2), "status": acked}).status == kstatus.IN_PROGRESS
    # The pass's own write then derives again: Current.
    final = asyncio.run(
        writer.write_status(None, "scalingpolicies", body(2), typed(READY), T0, acked)  # type: ignore[arg-type]
    )
    assert kstatus.compute({**body(2), "status": final}).status == kstatus.CURRENT
    assert not captured["events"][1:]  # no Event for the acknowledgement


def test_kopf_patch_path_derives_too() -> None:
    b = body(3)
    delta, _ = writer.compute_status(
        b, {}, {}, [C("Ready", "False", "InvalidSpec", "spec.minReplicas: > max")], T0
    )
    assert delta["observedGeneration"] == 3
    assert {c["type"]: c["status"] for c in delta["conditions"]}["Stalled"] == "True"


class _Loop:
    def observe(self, body: Any) -> bool:
        return False

    async def run(self) -> float:
        return 60.0

    def close(self) -> None:
        pass

    async def settle(self) -> None:
        pass


def test_scheduler_runs_an_unseen_generation_at_once_and_spreads_the_rest() -> None:
    async def main() -> tuple[float, float]:
        s = sched.Scheduler[_Loop]("X", first_within=100.0)
        s.track("new", {"metadata": {"generation": 1}}, _Loop)
        seen = {"metadata": {"generation": 1}, "status": {"observedGeneration": 1}}
        for i in range(20):
            s.track(f"old{i}", seen, _Loop)
        now = time.monotonic()
        first = s.schedule.next_at()
        due_new = dict(s.schedule.pop_due(now + 0.5))
        await s.stop()
        return (first or 0) - now, len(due_new)

    ahead, due = asyncio.run(main())
    assert ahead <= 0.01
    assert due < 21  # the others are spread over first_within (all 20 within 0.5 s: ~1e-26)


def test_scheduler_spreads_new_objects_beyond_its_at_once_burst() -> None:
    async def main() -> tuple[int, float]:
        s = sched.Scheduler[_Loop]("X", new_at_once=(5, 1.0), new_within=10.0)
        for i in range(200):  # created together: five at once, the rest over 10 s
            s.track(f"new{i}", {"metadata": {"generation": 1}}, _Loop)
        now = time.monotonic()
        at_once = len(s.schedule.pop_due(now))
        latest = max(s.schedule.due(f"new{i}") or 0.0 for i in range(200))
        await s.stop()
        return at_once, latest - now

    at_once, spread = asyncio.run(main())
    assert 5 <= at_once < 30  # the burst, plus the few of 195 spread into its first ms
    assert 5.0 < spread <= 10.0


def test_a_healthpolicy_acknowledges_a_new_generation_from_the_watch_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stronghold_operator.controllers import health
    from stronghold_operator.controllers.common import Services

    spec = {"interval": "10s", "checks": [{"name": "web", "http": {"url": "http://x/"}}]}
    written = {"observedGeneration": 1, "conditions": [READY.to_dict(1, "2026-12-06T01:00:00Z")]}

    def policy(generation: int) -> dict[str, Any]:
        meta = {"namespace": "ns", "name": "p", "uid": "u-gen", "generation": generation}
        return {"metadata": meta, "spec": spec, "status": written}

    updates: list[list[cond.Condition]] = []

    def update(_: Any, desired: Any, conds: Any, now: Any = None) -> None:
        updates.append(list(conds))

    monkeypatch.setattr(writer.StatusWriter, "update", update)
    loop = health.PolicyLoop(
        Services(kube=None),  # type: ignore[arg-type]
        health.HealthRuntime(health.new_scheduler()),
        policy(1),
    )
    assert loop.observe(policy(1)) is False and updates == []  # nothing new
    assert loop.observe(policy(2))  # a round now, and the acknowledgement before it
    assert updates == [lifecycle.acknowledge(2)]
    loop.close()


def test_a_round_that_saw_the_old_spec_keeps_reconciling_true(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stronghold_operator.controllers import health
    from stronghold_operator.controllers.common import Services
    from stronghold_operator.services import health as health_service

    spec = {"interval": "10s", "checks": [{"name": "web", "http": {"url": "http://x/"}}]}
    written = {"observedGeneration": 1, "conditions": [READY.to_dict(1, "2026-12-06T01:00:00Z")]}

    def policy(generation: int) -> dict[str, Any]:
        meta = {"namespace": "ns", "name": "p", "uid": "u-race", "generation": generation}
        return {"metadata": meta, "spec": spec, "status": written}

    updates: list[list[cond.Condition]] = []
    monkeypatch.setattr(
        writer.StatusWriter, "update", lambda _, d, conds, now=None: updates.append(list(conds))
    )
    loop = health.PolicyLoop(
        Services(kube=None),  # type: ignore[arg-type]
        health.HealthRuntime(health.new_scheduler()),
        policy(1),
    )

    async def round_(*_: Any) -> health_service.Round:
        loop.observe(policy(2))  # the spec changes while the round probes
        return health_service.Round({}, [READY], 10.0)

    monkeypatch.setattr(health_service, "run_round", round_)
    monkeypatch.setattr(health.PolicyLoop, "ports", lambda *_: None)
    asyncio.run(loop.run())
    # The acknowledgement, then the old spec's round, still Reconciling for generation 2.
    assert updates[0] == lifecycle.acknowledge(2)
    assert updates[-1] == [READY, *lifecycle.acknowledge(2)]
    loop.close()
