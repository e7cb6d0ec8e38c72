"""runtime/budget: the process's write budget toward the API server."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from stronghold_operator.logic import ratelimit
from stronghold_operator.platforms.kube import ApiError
from stronghold_operator.runtime import budget as budget_mod
from stronghold_operator.runtime.budget import WriteBudget, error_status, retryable


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_significant_writes_go_before_routine_ones_and_events_last() -> None:
    b = WriteBudget(qps=50, burst=1)  # the real clock: a token every 20 ms
    assert b.try_acquire(ratelimit.SIGNIFICANT)  # the burst is spent
    order: list[str] = []

    async def one(name: str, priority: int) -> None:
        await b.acquire(priority)
        order.append(name)

    tasks = [
        asyncio.create_task(one("event", ratelimit.EVENT)),
        asyncio.create_task(one("routine", ratelimit.ROUTINE)),
        asyncio.create_task(one("change", ratelimit.SIGNIFICANT)),
    ]
    await asyncio.sleep(0)
    assert b.queued == 3 and budget_mod.QUEUE._value.get() >= 3
    assert not b.try_acquire(ratelimit.SIGNIFICANT)  # nobody jumps the queue
    await asyncio.wait_for(asyncio.gather(*tasks), 2)
    assert order == ["change", "routine", "event"]


async def test_a_cancelled_waiter_takes_no_token() -> None:
    b = WriteBudget(qps=20, burst=1)
    b.try_acquire(ratelimit.SIGNIFICANT)
    gone = asyncio.create_task(b.acquire(ratelimit.SIGNIFICANT))
    kept = asyncio.create_task(b.acquire(ratelimit.ROUTINE))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.wait_for(kept, 2)  # 50 ms: the cancelled waiter took no token
    assert b.queued == 0 and budget_mod.QUEUE._value.get() == 0


async def test_send_records_refusals_and_a_429_pauses_every_write() -> None:
    clock = Clock()
    b = WriteBudget(qps=100, burst=100, clock=clock)
    refused = ApiError(429, "Too Many Requests", retry_after=3)
    before = budget_mod.REFUSED.labels("429")._value.get()

    async def call() -> None:
        raise refused

    with pytest.raises(ApiError):
        await b.send(ratelimit.SIGNIFICANT, call)
    assert budget_mod.REFUSED.labels("429")._value.get() == before + 1
    assert b.bucket.wait(clock.now) == pytest.approx(3.0)

    async def ok() -> str:
        return "done"

    clock.now += 3.0
    assert await b.send(ratelimit.SIGNIFICANT, ok) == "done"


async def test_an_answer_the_caller_expects_is_not_counted_as_refused() -> None:
    b = WriteBudget(qps=100, burst=100, clock=Clock())
    exists = ApiError(409, "AlreadyExists")
    before = budget_mod.REFUSED.labels("409")._value.get()

    async def create() -> None:
        raise exists

    for answers in ((409,), ()):
        with pytest.raises(ApiError):
            await b.send(ratelimit.SIGNIFICANT, create, answers=answers)
    # Counted once: by the call that did not expect it. Its slot came back both times.
    assert budget_mod.REFUSED.labels("409")._value.get() == before + 1
    assert b.in_flight == 0


def test_retry_delay_backs_off_and_honours_retry_after() -> None:
    b = WriteBudget(qps=10, burst=10)
    slow = ApiError(503, "Unavailable")
    delays = [b.retry_delay(slow, a, base=1.0) for a in range(8)]
    assert delays[0] <= 1.0 and max(delays) <= budget_mod.BACKOFF_CAP_S
    told = ApiError(429, "Too Many", retry_after=20)
    assert b.retry_delay(told, 0, base=1.0) >= 20
    assert b.retry_delay(ConnectionResetError(), 10, base=1.0) <= budget_mod.UNREACHABLE_CAP_S


@pytest.mark.parametrize(
    "exc, expected",
    [
        (SimpleNamespace(status=429, headers={"Retry-After": "7"}), (429, 7.0)),
        (SimpleNamespace(status=500, headers=None), (500, None)),
        (SimpleNamespace(status=429, retry_after=2), (429, 2.0)),  # an error of our own
        # lightkube's raw ApiError: ``status`` is the apiserver's Status object.
        (SimpleNamespace(status=SimpleNamespace(code=503), response=None), (503, None)),
        # httpx's HTTPStatusError: the response carries code and headers.
        (
            SimpleNamespace(
                response=SimpleNamespace(status_code=429, headers={"Retry-After": "1"})
            ),
            (429, 1.0),
        ),
        (SimpleNamespace(status=429, headers={"Retry-After": "Wed, 21 Oct 2015"}), (429, None)),
        (ConnectionResetError(), (None, None)),
    ],
)
def test_error_status_reads_any_client_library(exc: Any, expected: Any) -> None:
    assert error_status(exc) == expected


def test_retryable() -> None:
    assert retryable(ApiError(429, "")) and retryable(ApiError(502, ""))
    assert retryable(ConnectionRefusedError()) and retryable(TimeoutError())
    assert not retryable(ApiError(409, "")) and not retryable(ValueError("bug"))


def test_the_budget_reads_its_limits_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(budget_mod.QPS_ENV, "7")
    monkeypatch.setenv(budget_mod.BURST_ENV, "9")
    b = budget_mod.budget()
    assert (b.bucket.qps, b.bucket.burst) == (7.0, 9)
    assert budget_mod.budget() is b


async def test_a_write_builds_its_patch_only_once_it_has_a_slot() -> None:
    """No write waits for a connection with its patch made: the slots are the budget's."""
    b = WriteBudget(qps=1000, burst=1000, in_flight=1)
    answered = asyncio.Event()
    built: list[str] = []

    async def first() -> None:
        built.append("first")
        await answered.wait()

    async def second() -> None:
        built.append("second")

    one = asyncio.create_task(b.send(ratelimit.SIGNIFICANT, first))
    two = asyncio.create_task(b.send(ratelimit.SIGNIFICANT, second))
    for _ in range(5):
        await asyncio.sleep(0)
    assert built == ["first"] and b.in_flight == 1 and b.queued == 1
    assert b.try_acquire(ratelimit.EVENT) is False  # nobody jumps the queue, Events neither
    answered.set()
    await asyncio.wait_for(asyncio.gather(one, two), 2)
    assert built == ["first", "second"] and b.in_flight == 0
    assert budget_mod.IN_FLIGHT._value.get() == 0


async def test_a_failed_write_gives_its_slot_back() -> None:
    b = WriteBudget(qps=1000, burst=1000, in_flight=1)

    async def refused() -> None:
        raise ApiError(500, "boom")

    with pytest.raises(ApiError):
        await b.send(ratelimit.SIGNIFICANT, refused)
    assert b.in_flight == 0
    await asyncio.wait_for(b.acquire(ratelimit.SIGNIFICANT, slot=True), 2)
    assert b.in_flight == 1


async def test_a_waiter_cancelled_as_it_is_granted_gives_the_slot_back() -> None:
    b = WriteBudget(qps=1000, burst=1000, in_flight=1)
    await b.acquire(ratelimit.SIGNIFICANT, slot=True)  # another object's write, in flight
    waiter = asyncio.create_task(b.acquire(ratelimit.SIGNIFICANT, slot=True))
    await asyncio.sleep(0)
    assert b.queued == 1
    b.release()
    for _ in range(10):  # the pump grants the slot; the waiter has not run yet
        if b.in_flight == 1:
            break
        await asyncio.sleep(0)
    assert b.in_flight == 1 and not waiter.done()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert b.in_flight == 0 and b.queued == 0
