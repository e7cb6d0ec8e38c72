"""Rounds take turns on the event loop: at most ``PER_PASS`` evaluations per pass of it.

One shared probe's answer (coalescing, probes/runner.py) wakes every policy that waited for
it in the same pass of the event loop. In a storm at 5,000 policies that was 2,500
evaluations back to back: seconds in which the loop read no socket, so no status write went
out or was answered, and the loop-stall monitor (runtime/load.py) saw a stall that then
discounted other policies' probes as the operator's fault. asyncio polls its sockets
between passes; letting ``PER_PASS`` rounds through per pass keeps them served between the
evaluations. The work is the same, in another order.
"""

from __future__ import annotations

import asyncio
from collections import deque

from prometheus_client import Gauge

from stronghold_operator.metrics import registry

# Rounds evaluated per pass of the loop: a millisecond or two each, so the sockets are read
# every few tens of milliseconds however many rounds an answer woke.
PER_PASS = 25

WAITING = Gauge(
    "stronghold_health_rounds_waiting_turn",
    "Rounds whose probes answered, waiting for their turn to be evaluated (runtime/turns.py)",
    registry=registry,
)


class Turns:
    """The gate: :meth:`take` returns at once while this pass has turns left, else in a
    later pass, in the order asked."""

    def __init__(self, per_pass: int = PER_PASS) -> None:
        self.per_pass = per_pass
        self._loop: asyncio.AbstractEventLoop | None = None
        self._used = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._pass_planned = False

    async def take(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new loop (tests): nothing of the old one applies
            self._loop, self._used, self._waiting, self._pass_planned = loop, 0, deque(), False
        if self._used < self.per_pass and not self._waiting:
            self._used += 1
            self._plan(loop)
            return
        turn = loop.create_future()
        self._waiting.append(turn)
        WAITING.set(len(self._waiting))
        self._plan(loop)
        await turn

    def _plan(self, loop: asyncio.AbstractEventLoop) -> None:
        """The next pass starts with :meth:`_next_pass` (callbacks scheduled now run after
        the loop's next poll of its sockets)."""
        if not self._pass_planned:
            self._pass_planned = True
            loop.call_soon(self._next_pass, loop)

    def _next_pass(self, loop: asyncio.AbstractEventLoop) -> None:
        self._pass_planned = False
        if loop is not self._loop:
            return
        self._used = 0
        while self._waiting and self._used < self.per_pass:
            turn = self._waiting.popleft()
            if not turn.done():  # a cancelled round (its policy deleted) takes no turn
                turn.set_result(None)
                self._used += 1
        WAITING.set(len(self._waiting))
        if self._used:
            self._plan(loop)


_ONE: dict[str, Turns] = {}


def gate() -> Turns:
    """The process's gate (created on first use)."""
    one = _ONE.get("gate")
    if one is None:
        one = _ONE["gate"] = Turns()
    return one
