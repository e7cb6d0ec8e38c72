"""runtime/status: the one status writer (patch and Events captured).

``write_status`` is the one-shot form; :class:`StatusWriter` the per-object writer:
one write in flight, latest wins, failed writes retried with back-off, signature skip (no
heartbeat), rare refresh fields.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import kopf
import pytest
from pydantic import Field

from stronghold_operator import conditions as cond
from stronghold_operator.models.scaling import ScalingPolicyStatus
from stronghold_operator.models.status import Condition, StatusModel
from stronghold_operator.platforms.kube import ApiError, Kube
from stronghold_operator.runtime import budget as budget_module
from stronghold_operator.runtime import status as writer
from stronghold_operator.runtime.status import StatusWriter, write_status

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


# --- StatusWriter ----------------------------------------------------------------------------

NOW = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)
KUBE = cast(Kube, None)


class FakeApi:
    """A patch function that records each merge patch; it can hold or fail writes."""

    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []
        self.hold: asyncio.Event | None = None
        self.fail: list[BaseException] = []
        self.started = asyncio.Event()

    async def __call__(
        self, kube: Kube, plural: str, namespace: str, name: str, delta: dict[str, Any]
    ) -> None:
        assert (plural, namespace, name) == ("things", "ns", "a")
        self.started.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.fail:
            raise self.fail.pop(0)
        self.patches.append(delta)


def body(generation: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "ops.stronghold.io/v1alpha1",
        "kind": "Thing",
        "metadata": {"namespace": "ns", "name": "a", "uid": "u1", "generation": generation},
    }


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []

    def event(obj: Any, *, type: str, reason: str, message: str) -> None:
        seen.append((type, reason))

    monkeypatch.setattr(kopf, "event", event)
    return seen


READY = cond.Condition("Ready", "True", "Reconciled", "ok")
NOT_READY = cond.Condition("Ready", "False", "TargetDown", "down")


async def drained(w: StatusWriter) -> None:
    if w.writing is not None:
        await asyncio.wait_for(w.writing, 5)


async def test_a_change_is_written_once_with_observed_generation(
    events: list[tuple[str, str]],
) -> None:
    api = FakeApi()
    w = StatusWriter(KUBE, "things", body(3), {}, patch=api)
    w.update({"replicas": 2}, [READY], NOW)
    await drained(w)
    (patch,) = api.patches
    assert patch["replicas"] == 2 and patch["observedGeneration"] == 3
    assert patch["conditions"][0]["type"] == "Ready"
    w.update({"replicas": 2}, [READY], NOW)  # nothing changed: no write
    await drained(w)
    assert len(api.patches) == 1
    assert events == []  # a condition's first value is not news


async def test_one_write_in_flight_and_the_latest_change_wins(
    events: list[tuple[str, str]],
) -> None:
    api = FakeApi()
    api.hold = asyncio.Event()
    w = StatusWriter(KUBE, "things", body(), {}, patch=api)
    w.update({"replicas": 1}, [READY], NOW)
    await api.started.wait()
    w.update({"replicas": 2}, [READY], NOW)  # while the first write is in flight
    w.update({"replicas": 3}, [NOT_READY], NOW)
    assert api.patches == []
    api.hold.set()
    await drained(w)
    assert [p.get("replicas") for p in api.patches] == [1, 3]
    assert api.patches[1]["conditions"][0]["status"] == "False"
    assert w.current["replicas"] == 3
    assert events == [("Warning", "TargetDown")]  # announced once, when it happened


async def test_a_write_waiting_for_the_budget_goes_out_with_the_latest_status(
    events: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Latest wins while queued too: two passes before the budget's turn are one patch."""
    monkeypatch.setitem(budget_module._ONE, "budget", budget_module.WriteBudget(20, 1))
    assert budget_module.budget().try_acquire(0)  # the only token: the next write waits
    api = FakeApi()
    w = StatusWriter(KUBE, "things", body(), {}, patch=api)
    w.update({"replicas": 1}, [READY], NOW)
    w.update({"replicas": 2}, [NOT_READY], NOW)  # both while the first waits its turn
    w.update({"replicas": 3}, [READY], NOW)
    await drained(w)
    (patch,) = api.patches
    assert patch["replicas"] == 3 and patch["conditions"][0]["status"] == "True"
    assert w.written["replicas"] == 3


async def test_a_change_undone_while_queued_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(budget_module._ONE, "budget", budget_module.WriteBudget(20, 1))
    api = FakeApi()
    w = StatusWriter(KUBE, "things", body(), {}, patch=api)
    w.update({"replicas": 1}, [READY], NOW)
    await drained(w)
    assert budget_module.budget().try_acquire(0) is False  # the token went to that write
    w.update({"replicas": 2}, [READY], NOW)  # queued for the budget ...
    w.update({"replicas": 1}, [READY], NOW)  # ... and back before its turn
    await drained(w)
    assert len(api.patches) == 1


async def test_a_failed_write_is_put_back_and_retried_with_what_changed_since(
    events: list[tuple[str, str]],
) -> None:
    api = FakeApi()
    api.fail = [ApiError(500, "boom")]
    w = StatusWriter(KUBE, "things", body(), {}, patch=api, retry_after=0.01)
    w.update({"replicas": 1}, [READY], NOW)
    await api.started.wait()
    w.update({"replicas": 2}, [READY], NOW)
    await drained(w)
    assert len(api.patches) == 1
    assert api.patches[0]["replicas"] == 2 and api.patches[0]["conditions"]
    assert w.written["replicas"] == 2


async def test_not_found_forgets_the_object() -> None:
    api = FakeApi()
    api.fail = [ApiError(404, "Not Found")]
    gone: list[bool] = []
    w = StatusWriter(
        KUBE, "things", body(), {}, patch=api, on_gone=lambda: gone.append(True), retry_after=0
    )
    w.update({"replicas": 1}, [READY], NOW)
    await drained(w)
    assert gone == [True] and api.patches == []


def _only_ready(status: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple((c["type"], c["status"]) for c in status.get("conditions") or ())


def signed_writer(api: FakeApi, causes: list[str], **options: Any) -> StatusWriter:
    """A writer with a signature (Ready's status) that tells each write's cause."""
    return StatusWriter(
        KUBE,
        "things",
        body(),
        {},
        patch=api,
        signature=_only_ready,
        on_write=causes.append,
        **options,
    )


async def test_numbers_wait_for_a_signature_change_and_are_never_written_alone(
    events: list[tuple[str, str]],
) -> None:
    """No heartbeat (issue 26): numbers go out only with a change a reader acts on."""
    api, causes = FakeApi(), []
    w = signed_writer(api, causes, replaced=("items",))
    w.update({"latency": 1, "items": [1]}, [READY], NOW)
    await drained(w)
    assert causes == ["change"] and "items" not in w.written  # replaced lists are not kept
    w.update({"latency": 2, "items": [2]}, [READY], NOW)  # numbers only: kept, not written
    await drained(w)
    assert len(api.patches) == 1 and w.current["latency"] == 2 and w.current["items"] == [2]
    w.update({"latency": 3, "items": [3]}, [NOT_READY], NOW)  # what a reader acts on
    await drained(w)
    assert causes == ["change", "change"]
    assert api.patches[1]["latency"] == 3 and api.patches[1]["items"] == [3]
    for latency in range(4, 50):  # however long it runs, numbers alone are never written
        w.update({"latency": latency, "items": [3]}, [NOT_READY], NOW)
    await drained(w)
    assert len(api.patches) == 2 and w.current["latency"] == 49


async def test_refresh_fields_are_written_alone_rarely(events: list[tuple[str, str]]) -> None:
    api, causes = FakeApi(), []
    w = signed_writer(api, causes, refresh=("probed",), refresh_every=3600)
    w._phase = 0.0  # this object's offset in the period (random, 0 to the period)
    w.update({"probed": "t1", "latency": 1}, [READY], NOW)
    await drained(w)
    w.update({"probed": "t2", "latency": 2}, [READY], NOW)  # the period is not up
    await drained(w)
    assert causes == ["change"] and len(api.patches) == 1
    assert w._last_refresh is not None
    w._last_refresh -= 3600  # the refresh is due: the field alone, not the numbers
    w.update({"probed": "t3", "latency": 3}, [READY], NOW)
    await drained(w)
    assert causes == ["change", "refresh"] and api.patches[-1] == {"probed": "t3"}
    w.update({"probed": "t4", "latency": 4}, [NOT_READY], NOW)  # a change takes the numbers
    await drained(w)
    assert api.patches[-1]["latency"] == 4 and api.patches[-1]["probed"] == "t4"


async def test_objects_written_together_refresh_apart(events: list[tuple[str, str]]) -> None:
    """Each object has its own phase in the period: a thousand policies written together
    (applied together, or one storm) do not refresh together half an hour later."""
    writers = [
        signed_writer(FakeApi(), [], refresh=("probed",), refresh_every=1800) for _ in range(50)
    ]
    for w in writers:
        w.update({"probed": "t1"}, [READY], NOW)
    await asyncio.gather(*(drained(w) for w in writers))
    due = sorted(cast(float, w._last_refresh) + 1800 for w in writers)
    assert due[-1] - due[0] > 600  # spread over the period, not one instant


async def test_refresh_soon_shortens_the_period_for_a_while(
    events: list[tuple[str, str]],
) -> None:
    api, causes = FakeApi(), []
    w = signed_writer(api, causes, refresh=("probed",), refresh_every=3600)
    w._phase = 0.0
    w.update({"probed": "t1"}, [READY], NOW)
    await drained(w)
    w.refresh_soon(every=0.0, within=60)  # e.g. a maintenance hold ended
    w.update({"probed": "t2"}, [READY], NOW)
    await drained(w)
    w._soon = (0.0, 0.0)  # the while is over: back to the long period
    w.update({"probed": "t3"}, [READY], NOW)
    await drained(w)
    assert causes == ["change", "refresh"] and [p.get("probed") for p in api.patches] == [
        "t1",
        "t2",
    ]


async def test_a_429_is_retried_after_its_retry_after_within_the_budget(
    events: list[tuple[str, str]],
) -> None:
    refused = ApiError(429, "Too Many Requests", retry_after=0.05)
    api = FakeApi()
    api.fail = [refused]
    w = StatusWriter(KUBE, "things", body(), {}, patch=api, retry_after=0.001)
    started = asyncio.get_running_loop().time()
    w.update({"replicas": 1}, [READY], NOW)
    await drained(w)
    assert api.patches[0]["replicas"] == 1
    assert asyncio.get_running_loop().time() - started >= 0.05  # never sooner than asked


async def test_write_status_retries_an_overloaded_api_server_but_not_a_refusal(
    monkeypatch: pytest.MonkeyPatch, events: list[tuple[str, str]]
) -> None:
    monkeypatch.setattr(writer, "ONE_SHOT_ATTEMPTS", 3)
    api = FakeApi()
    api.fail = [ApiError(503, "Unavailable")]
    w = StatusWriter(KUBE, "things", body(), {}, patch=api, retry_after=0.001)
    await w.write({"replicas": 1}, [READY], NOW)
    assert api.patches[0]["replicas"] == 1
    api.fail = [ApiError(422, "Invalid")]
    with pytest.raises(ApiError):
        await w.write({"replicas": 2}, [READY], NOW)
    assert w.written["replicas"] == 1  # put back: the next write sends it again


async def test_newsworthy_filters_the_events(events: list[tuple[str, str]]) -> None:
    api = FakeApi()
    w = StatusWriter(KUBE, "things", body(), {}, patch=api, newsworthy=lambda t: t.type != "Ready")
    w.update({}, [READY, cond.Condition("Degraded", "False", "Fine", "")], NOW)
    w.update({}, [NOT_READY, cond.Condition("Degraded", "True", "Slow", "")], NOW)
    await drained(w)
    assert events == [("Warning", "Slow")]


class Status(StatusModel):  # the smallest typed status
    conditions: list[Condition] = Field(default_factory=list)
    replicas: int | None = None


async def test_write_status_keeps_its_signature_and_raises_on_failure(
    monkeypatch: pytest.MonkeyPatch, events: list[tuple[str, str]]
) -> None:
    api = FakeApi()
    monkeypatch.setattr(writer, "patch_status", api)
    obj = kopf.Body(cast(kopf.RawBody, {**body(2), "status": {"replicas": 1}}))
    status = Status(replicas=2, conditions=[Condition(type="Ready", status="True")])
    after = await write_status(KUBE, "things", obj, status, NOW)
    assert after["replicas"] == 2 and after["observedGeneration"] == 2
    assert api.patches[0]["replicas"] == 2
    api.fail = [ApiError(409, "Conflict")]
    with pytest.raises(ApiError):
        await write_status(KUBE, "things", obj, Status(replicas=5), NOW, current=after)
    down = Status(conditions=[Condition(type="Ready", status="False", reason="Down")])
    await write_status(KUBE, "things", obj, down, NOW, current=after, events_for=())
    assert events == []  # events_for names no type: no Events


async def test_folded_transitions_are_counted_not_posted(events: list[tuple[str, str]]) -> None:
    """A shared target's storm tells them (runtime/storms.py): the status still moves."""
    api = FakeApi()
    w = StatusWriter(KUBE, "things", body(), {}, patch=api)
    w.update({}, [READY, cond.Condition("Degraded", "False", "Fine", "")], NOW)
    counted: list[int] = []
    w.update(
        {}, [NOT_READY, cond.Condition("Degraded", "True", "Slow", "")], NOW, folded=counted.append
    )
    await drained(w)
    assert events == [] and counted == [2]  # the first values were never news
    assert w.current["conditions"][0]["reason"] == "TargetDown"


async def test_a_write_waiting_for_a_slot_goes_out_with_the_latest_status(
    events: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API server answers slowly (every slot taken by other objects' writes): the
    patch is made when a slot frees, so the states meanwhile are one patch, the latest."""
    held = budget_module.WriteBudget(1000, 1000, in_flight=1)
    monkeypatch.setitem(budget_module._ONE, "budget", held)
    await held.acquire(0, slot=True)  # another object's write, not answered yet
    api = FakeApi()
    w = StatusWriter(KUBE, "things", body(), {}, patch=api)
    w.update({"replicas": 1}, [READY], NOW)
    await asyncio.sleep(0)
    w.update({"replicas": 2}, [NOT_READY], NOW)
    w.update({"replicas": 3}, [READY], NOW)
    assert not api.started.is_set()
    held.release()
    await drained(w)
    (patch,) = api.patches
    assert patch["replicas"] == 3 and patch["conditions"][0]["status"] == "True"
