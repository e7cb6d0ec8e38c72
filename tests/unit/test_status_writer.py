"""runtime/status.write_status: the typed status writer (patch and Events captured)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stronghold_operator.models.scaling import ScalingPolicyStatus
from stronghold_operator.models.status import Condition
from stronghold_operator.runtime import status as writer

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
BODY: Any = {"metadata": {"name": "p", "namespace": "ns", "generation": 3}, "status": {}}


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {"patches": [], "events": []}

    async def patch_status(_: Any, plural: str, ns: str, name: str, delta: Any) -> None:
        if delta:
            out["patches"].append((plural, ns, name, delta))

    monkeypatch.setattr(writer, "patch_status", patch_status)
    monkeypatch.setattr(writer.kopf, "event", lambda _, **kw: out["events"].append(kw))
    return out


def write(status: ScalingPolicyStatus, now: datetime, current: Any = None) -> dict[str, Any]:
    return asyncio.run(writer.write_status(None, "scalingpolicies", BODY, status, now, current))  # type: ignore[arg-type]


def ready(value: str, reason: str) -> ScalingPolicyStatus:
    return ScalingPolicyStatus(
        conditions=[Condition(type="Ready", status=value, reason=reason)],  # type: ignore[arg-type]
        current_replicas=2,
        below_thresholds_since=None,
    )


def test_writes_set_fields_conditions_and_generation_then_nothing(
    captured: dict[str, list[Any]],
) -> None:
    first = write(ready("Unknown", "Initializing"), T0)
    [(plural, ns, name, delta)] = captured["patches"]
    assert (plural, ns, name) == ("scalingpolicies", "ns", "p")
    assert delta["observedGeneration"] == 3 and delta["currentReplicas"] == 2
    assert delta["conditions"][0]["lastTransitionTime"] == "2026-03-01T12:00:00Z"
    assert "lastScaleTime" not in delta  # never set: left alone
    assert captured["events"] == []  # a condition's first value is not news
    # The same status again: no patch.
    again = write(ready("Unknown", "Initializing"), T0 + timedelta(minutes=1), first)
    assert len(captured["patches"]) == 1 and again == first


def test_a_transition_is_patched_and_announced(captured: dict[str, list[Any]]) -> None:
    first = write(ready("Unknown", "Initializing"), T0)
    write(ready("False", "TargetNotFound"), T0 + timedelta(seconds=5), first)
    assert captured["events"] == [
        {"type": "Warning", "reason": "TargetNotFound", "message": "Ready=False: "}
    ]
    delta = captured["patches"][-1][3]
    assert delta["conditions"][0]["lastTransitionTime"] == "2026-03-01T12:00:05Z"
