"""The shared schedule every kind's periodic passes run on (runtime/scheduler.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import pytest

from stronghold_operator.runtime.scheduler import Scheduler


class FakeLoop:
    """A loop that records its passes; ``delay`` is what each pass asks for."""

    def __init__(self, delay: float = 60.0, fail: bool = False) -> None:
        self.delay, self.fail = delay, fail
        self.passes = 0
        self.ran = asyncio.Event()
        self.closed = False
        self.wake_on_observe = True
        self.block: asyncio.Event | None = None

    def observe(self, body: Mapping[str, Any]) -> bool:
        return self.wake_on_observe

    async def run(self) -> float:
        self.passes += 1
        self.ran.set()
        if self.block is not None:
            await self.block.wait()
        if self.fail:
            raise RuntimeError("boom")
        return self.delay

    def close(self) -> None:
        self.closed = True

    async def settle(self) -> None:
        return None


BODY: dict[str, Any] = {"metadata": {"name": "a", "namespace": "n"}}


async def passes_reach(loop: FakeLoop, n: int) -> None:
    while loop.passes < n:
        loop.ran.clear()
        await asyncio.wait_for(loop.ran.wait(), 5)


async def test_a_new_object_runs_soon_and_then_at_its_interval() -> None:
    s: Scheduler[FakeLoop] = Scheduler("Test", first_within=0.0, jitter=0.0)
    loop = FakeLoop(delay=0.05)
    assert s.track("u1", BODY, lambda: loop) is loop
    await passes_reach(loop, 3)  # first pass, then every 0.05 s
    await s.stop()


async def test_a_change_moves_the_pass_to_now() -> None:
    s: Scheduler[FakeLoop] = Scheduler("Test", first_within=0.0)
    loop = FakeLoop(delay=3600)
    s.track("u1", BODY, lambda: loop)
    await passes_reach(loop, 1)
    loop.wake_on_observe = False
    s.track("u1", BODY, FakeLoop)  # an event the loop does not care about
    await asyncio.sleep(0.05)
    assert loop.passes == 1
    loop.wake_on_observe = True
    s.track("u1", BODY, FakeLoop)
    await passes_reach(loop, 2)
    await s.stop()


async def test_a_change_during_a_pass_runs_another_pass_right_after() -> None:
    s: Scheduler[FakeLoop] = Scheduler("Test", first_within=0.0)
    loop = FakeLoop(delay=3600)
    loop.block = asyncio.Event()
    s.track("u1", BODY, lambda: loop)
    await passes_reach(loop, 1)
    s.track("u1", BODY, lambda: loop)  # woken mid-pass
    await asyncio.sleep(0.02)
    assert loop.passes == 1  # not two passes of one object at once
    loop.block.set()
    await passes_reach(loop, 2)
    await s.stop()


async def test_a_failed_pass_is_logged_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    s: Scheduler[FakeLoop] = Scheduler("Test", first_within=0.0, retry_after=0.05)
    loop = FakeLoop(fail=True)
    with caplog.at_level(logging.WARNING, logger="stronghold.scheduler"):
        s.track("u1", BODY, lambda: loop)
        await passes_reach(loop, 2)
    assert "pass failed: RuntimeError boom" in caplog.text
    await s.stop()


async def test_a_delete_forgets_the_object_and_cancels_its_pass() -> None:
    s: Scheduler[FakeLoop] = Scheduler("Test", first_within=0.0)
    loop = FakeLoop()
    loop.block = asyncio.Event()
    s.track("u1", BODY, lambda: loop)
    await passes_reach(loop, 1)
    assert s.track("u1", BODY, lambda: loop, deleted=True) is None
    assert loop.closed and len(s) == 0 and "u1" not in s.schedule
    gone = {"metadata": {**BODY["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z"}}
    other = FakeLoop()
    assert s.track("u2", gone, lambda: other) is None and other.passes == 0
    await s.stop()


async def test_an_unexpected_error_is_logged_and_the_schedule_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s: Scheduler[FakeLoop] = Scheduler("Test")
    calls: list[float] = []
    second = asyncio.Event()

    def pop_due(now: float) -> list[Any]:
        calls.append(now)
        if len(calls) == 1:
            raise RuntimeError("a bug in one pass")
        second.set()
        return []

    s.schedule.pop_due = pop_due  # type: ignore[method-assign]
    task = asyncio.create_task(s.run_forever())
    with caplog.at_level(logging.ERROR, logger="stronghold.scheduler"):
        await asyncio.wait_for(second.wait(), 5)
    assert not task.done(), "the schedule ended"
    assert "unexpected error" in caplog.text and "a bug in one pass" in caplog.text
    assert calls[1] - calls[0] >= 0.9  # it waits a second instead of spinning
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_without_jitter_the_next_pass_is_exactly_when_the_pass_asked() -> None:
    # What MaintenanceWindows rely on: a pass that asks for the start of a window gets it.
    s: Scheduler[FakeLoop] = Scheduler("Test", first_within=0.0, jitter=0.0)
    loop = FakeLoop(delay=3600)
    before = time.monotonic()
    s.track("u1", BODY, lambda: loop)
    await passes_reach(loop, 1)
    await asyncio.sleep(0.01)
    due = s.schedule.due("u1")
    assert due is not None
    assert before <= due - 3600 <= time.monotonic()  # the pass's start + what it asked, exactly
    await s.stop()


async def test_the_second_pass_spreads_objects_that_started_together() -> None:
    # A restart or thousands applied at once: first passes within a few seconds; the
    # second pass comes up to spread_second of the delay early (later ones: the jitter).
    s: Scheduler[FakeLoop] = Scheduler("Test", first_within=0.0, jitter=0.0, spread_second=0.5)
    loops = [FakeLoop(delay=100.0) for _ in range(200)]
    for i, loop in enumerate(loops):
        s.track(f"u{i}", BODY, lambda loop=loop: loop)  # type: ignore[misc]
    for loop in loops:
        await passes_reach(loop, 1)
    await asyncio.sleep(0.01)
    now = time.monotonic()
    second = sorted(s.schedule.due(f"u{i}") - now for i in range(200))  # type: ignore[operator]
    assert second[0] >= 49.9 and second[-1] <= 100.0
    assert second[-1] - second[0] > 25  # spread over most of half the interval (200 draws)
    assert not s._first  # the spread is for the second pass only
    await s.stop()
