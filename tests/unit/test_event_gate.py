"""runtime/events: every Event through the correlator and the write budget."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from stronghold_operator.logic import ratelimit
from stronghold_operator.logic.events import Limits
from stronghold_operator.runtime import budget, events


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def obj(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "ops.stronghold.io/v1alpha1",
        "kind": "HealthPolicy",
        "metadata": {"namespace": "ns", "name": name, "uid": f"uid-{name}", "spec": "big"},
    }


@pytest.fixture
def sent() -> list[tuple[str, str, str, str]]:
    return []


def gate(sent: list[Any], limits: Limits, clock: Clock) -> events.EventGate:
    def send(body: Any, type_: str, reason: str, message: str) -> None:
        sent.append((body["metadata"]["name"], type_, reason, message))

    return events.EventGate(limits, clock=clock, send=send)


async def test_a_storm_is_a_bounded_burst_and_the_drops_are_counted(sent: list[Any]) -> None:
    clock = Clock()
    g = gate(sent, Limits(qps=1, burst=10), clock)
    before = events.DROPPED.labels("cap")._value.get()
    for i in range(500):
        g.post(obj(f"p{i}"), "Warning", "IncidentOpened", "web down")
    assert len(sent) == 10
    assert events.DROPPED.labels("cap")._value.get() == before + 490


async def test_similar_events_are_summarised_on_their_object(sent: list[Any]) -> None:
    clock = Clock()
    g = gate(sent, Limits(max_similar=2, window=60, qps=100, burst=100), clock)
    for i in range(5):
        g.post(obj("a"), "Warning", "WebhookFailed", f"attempt {i}")
    assert [s[3] for s in sent] == ["attempt 0", "attempt 1"]
    clock.now = 61
    assert g.flush() == 1
    name, type_, reason, message = sent[-1]
    assert (name, type_, reason) == ("a", "Warning", "WebhookFailed")
    assert message.startswith("3 more like this in 1 min") and message.endswith("attempt 4")
    await g.close()


async def test_events_wait_for_the_budget_behind_status_writes(sent: list[Any]) -> None:
    budget.configure(qps=1000, burst=1)
    assert budget.budget().try_acquire(ratelimit.SIGNIFICANT)  # the budget is spent
    g = gate(sent, Limits(qps=100, burst=100), Clock())
    g.post(obj("a"), "Normal", "Recovered", "ok")
    assert sent == []  # queued, not dropped
    await asyncio.sleep(0.05)
    assert sent == [("a", "Normal", "Recovered", "ok")]


def test_post_uses_kopf_event_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    import kopf

    seen: list[Any] = []
    monkeypatch.setattr(kopf, "event", lambda body, **kw: seen.append((body, kw)))
    events.post(obj("a"), type="Normal", reason="Released", message="m")
    [(body, kw)] = seen
    assert isinstance(body, kopf.Body) and kw == {
        "type": "Normal",
        "reason": "Released",
        "message": "m",
    }


def test_forget_drops_an_objects_windows(sent: list[Any]) -> None:
    g = gate(sent, Limits(max_similar=1, qps=100, burst=100), Clock())
    g.post(obj("a"), "Warning", "Down", "1")
    g.post(obj("a"), "Warning", "Down", "2")
    g.forget(obj("a"))
    assert len(g.correlator) == 0


def test_without_an_event_loop_an_event_is_not_held(sent: list[Any]) -> None:
    """A sync handler's thread has no loop to wait in: kopf's poster takes the Event."""
    budget.configure(qps=0.001, burst=1)
    assert budget.budget().try_acquire(ratelimit.SIGNIFICANT)
    g = gate(sent, Limits(qps=100, burst=100), Clock())
    g.post(obj("a"), "Normal", "Released", "m")
    assert sent == [("a", "Normal", "Released", "m")]
