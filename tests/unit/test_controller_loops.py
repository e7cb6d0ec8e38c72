"""The per-object loops of ScalingPolicy and MaintenanceWindow on the shared scheduler
(controllers/scaling.py, controllers/maintenance.py): what wakes a pass, the state they
start from, and what a failed pass leaves behind."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import pytest

from stronghold_operator.controllers import maintenance, scaling
from stronghold_operator.controllers.common import Services
from stronghold_operator.models.common import MAINTENANCE_ANNOTATION
from stronghold_operator.models.maintenance import END_NOW_ANNOTATION

KOPF_ANNOTATION = "ops.stronghold.io/last-handled-configuration"


def body(generation: int = 1, annotations: dict[str, str] | None = None, **status: Any) -> Any:
    meta = {
        "name": "o",
        "namespace": "ns",
        "uid": "u1",
        "generation": generation,
        "resourceVersion": "1",
        "annotations": annotations or {},
    }
    return kopf.Body({"metadata": meta, "spec": {}, "status": status})  # type: ignore[arg-type]


def test_only_a_freeze_wakes_a_scaling_pass_early() -> None:
    loop = scaling.ScalingLoop(None, body(lastScaleUpTime="2026-01-01T00:00:00Z"), None)  # type: ignore[arg-type]
    assert loop.memory.state.last_scale_up is not None  # resumed from status
    assert not loop.observe(body(currentReplicas=3))  # our own status write
    assert not loop.observe(body(annotations={KOPF_ANNOTATION: "{}"}))  # kopf's bookkeeping
    assert loop.observe(body(annotations={KOPF_ANNOTATION: "{}", MAINTENANCE_ANNOTATION: "w"}))
    assert loop.observe(body(annotations={MAINTENANCE_ANNOTATION: "w,x"}))  # another window
    # A lifted hold waits for the next pass, at the policy's own cadence (an unpaused
    # policy does not act in the same breath; an HPA applied just before is known).
    assert not loop.observe(body(annotations={}))
    # A new spec wakes a pass that only acknowledges the generation (see below).
    assert loop.observe(body(generation=2, annotations={MAINTENANCE_ANNOTATION: "w,x"}))
    assert not loop.observe(body(generation=2))
    assert loop.body["metadata"]["generation"] == 2  # the latest body is what a pass reads


def test_a_new_scaling_spec_is_acknowledged_at_once_and_acted_on_at_the_cadence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = scaling.ScalingLoop(None, body(), None)  # type: ignore[arg-type]
    calls: list[str] = []

    async def full() -> Any:
        calls.append("pass")
        return None  # an invalid spec: IDLE_INTERVAL

    async def ack() -> None:
        calls.append("ack")

    monkeypatch.setattr(loop, "reconcile_once", full)
    monkeypatch.setattr(loop, "acknowledge", ack)
    assert asyncio.run(loop.run()) == scaling.IDLE_INTERVAL  # the first pass is a full one
    assert loop.observe(body(generation=2))
    left = asyncio.run(loop.run())
    assert calls == ["pass", "ack"] and 0 < left <= scaling.IDLE_INTERVAL  # cadence kept
    loop._due = 0.0  # the full pass is due: it runs, with the new spec
    asyncio.run(loop.run())
    assert calls == ["pass", "ack", "pass"]


def test_a_window_pass_is_woken_by_a_new_spec_or_a_manual_annotation() -> None:
    loop = maintenance.WindowLoop(None, body(), {})  # type: ignore[arg-type]
    assert not loop.observe(body(frozenTargets=["ScalingPolicy/web"]))
    assert loop.observe(body(annotations={END_NOW_ANNOTATION: "1"}))
    assert not loop.observe(body(annotations={END_NOW_ANNOTATION: "1"}))
    assert loop.observe(body(generation=2, annotations={END_NOW_ANNOTATION: "1"}))


def test_a_failed_window_pass_starts_again_from_status(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = maintenance.WindowLoop(None, body(handledEndNow="a"), {})  # type: ignore[arg-type]
    assert loop.state.handled_end_now == "a"

    async def fails() -> float:
        loop.state.handled_end_now = "ahead of status"  # in memory, never written
        raise RuntimeError("apiserver said 500")

    monkeypatch.setattr(loop, "reconcile_once", fails)
    loop.observe(body(handledEndNow="b"))  # the watch delivered a newer status meanwhile
    with pytest.raises(RuntimeError):
        asyncio.run(loop.run())  # the scheduler logs it and retries
    assert loop.state.handled_end_now == "b"


def test_a_window_wakes_not_before_the_second_it_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = maintenance.WindowLoop(None, body(), {})  # type: ignore[arg-type]

    async def asks() -> float:
        return 7.0

    monkeypatch.setattr(loop, "reconcile_once", asks)
    assert 7.0 < asyncio.run(loop.run()) <= 7.1


def test_each_kind_has_one_scheduler_and_windows_have_no_jitter() -> None:
    svc = Services(kube=None)  # type: ignore[arg-type]
    windows = svc.scheduler("MaintenanceWindow", maintenance.new_scheduler)
    policies = svc.scheduler("ScalingPolicy", scaling.new_scheduler)
    assert svc.scheduler("ScalingPolicy", scaling.new_scheduler) is policies  # one per kind
    assert windows.jitter == 0.0  # a window wakes exactly at its start
    assert windows.retry_after == 5.0 and policies.retry_after == scaling.IDLE_INTERVAL
    asyncio.run(svc.stop_schedulers())
