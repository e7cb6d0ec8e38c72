"""The daemon loop: passes follow the interval a pass returns; a failing pass does not end it."""

from __future__ import annotations

import logging

import pytest

from stronghold_operator.runtime.periodic import run_passes


class FakeStopped:
    """Stops after ``waits`` waits; records every wait's timeout."""

    def __init__(self, waits: int) -> None:
        self.left = waits
        self.timeouts: list[float | None] = []

    def __bool__(self) -> bool:
        return self.left <= 0

    async def _done(self) -> object:
        return self

    def wait(self, timeout: float | None = None) -> object:
        self.timeouts.append(timeout)
        self.left -= 1
        return self._done()


async def test_waits_what_each_pass_returns() -> None:
    stopped = FakeStopped(3)
    intervals = iter([5.0, 7.5, 1.0])

    async def one_pass() -> float:
        return next(intervals)

    await run_passes(one_pass, stopped, logging.getLogger("t"), what="t", retry_after=9)
    assert stopped.timeouts == [5.0, 7.5, 1.0]


async def test_a_failing_pass_is_logged_reset_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    stopped = FakeStopped(3)
    calls: list[str] = []

    async def one_pass() -> float:
        calls.append("pass")
        if len(calls) == 2:
            raise RuntimeError("apiserver said 500")
        return 2.0

    await run_passes(
        one_pass,
        stopped,
        logging.getLogger("t"),
        what="scaling",
        retry_after=9,
        on_error=lambda: calls.append("reset"),
    )
    assert calls == ["pass", "pass", "reset", "pass"]
    assert stopped.timeouts == [2.0, 9, 2.0]
    assert "scaling pass failed: apiserver said 500" in caplog.text
