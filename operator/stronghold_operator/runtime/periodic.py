"""The loop of a per-object daemon: one pass, then wait for as long as the pass asked."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol


class Stopped(Protocol):
    """What the loop needs of kopf's ``DaemonStopped`` (a flag with an interruptible wait)."""

    def __bool__(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> Awaitable[object]: ...


async def run_passes(
    one_pass: Callable[[], Awaitable[float]],
    stopped: Stopped,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    *,
    what: str,
    retry_after: float,
    on_error: Callable[[], None] | None = None,
) -> None:
    """Run ``one_pass`` until stopped; it returns the seconds until the next pass.

    An unexpected error in one pass is logged and retried after ``retry_after`` seconds (an
    API hiccup must not end the daemon); ``on_error`` may reset in-memory state first.
    """
    while not stopped:
        try:
            interval = await one_pass()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("%s pass failed: %s", what, exc)
            if on_error is not None:
                on_error()
            interval = retry_after
        await stopped.wait(interval)
