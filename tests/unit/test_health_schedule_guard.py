"""The one task that starts every HealthPolicy's rounds survives a bug in one pass."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import pytest

from stronghold_operator.handlers.health import HealthRuntime, run_schedule
from stronghold_operator.probes.runner import Prober


async def test_an_unexpected_error_is_logged_and_the_schedule_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rt = HealthRuntime(prober=cast(Prober, None))
    passes: list[float] = []
    second = asyncio.Event()

    def pop_due(now: float) -> list[Any]:
        passes.append(now)
        if len(passes) == 1:
            raise RuntimeError("a bug in one pass")
        second.set()
        return []

    rt.schedule.pop_due = pop_due  # type: ignore[method-assign]
    task = asyncio.create_task(run_schedule(rt))
    with caplog.at_level(logging.ERROR, logger="stronghold.health"):
        await asyncio.wait_for(second.wait(), 5)
    assert not task.done(), "the schedule ended"
    assert "unexpected error" in caplog.text and "a bug in one pass" in caplog.text
    assert passes[1] - passes[0] >= 0.9  # it waits a second instead of spinning
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
