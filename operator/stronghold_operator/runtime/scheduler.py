"""The one execution model for periodic work: every object's passes hang on one schedule.

Each kind keeps a :class:`Scheduler`; a kopf watch-event handler hands it every event of
the kind (:meth:`Scheduler.track`), and one task runs whatever pass is due. Why this and
not a kopf daemon per object: a daemon holds kopf's full copy of the object and a dozen
tasks and contexts, which was most of the operator's memory with a thousand
HealthPolicies (figures in docs/performance.md), and it needs a finalizer, which keeps a
namespace Terminating while the operator is down. Here an object is its own small state
(:class:`Loop`) and a slot in one heap.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from prometheus_client import Histogram

from stronghold_operator.logic.lifecycle import unobserved
from stronghold_operator.logic.ratelimit import TokenBucket
from stronghold_operator.logic.schedule import Schedule
from stronghold_operator.metrics import registry

log = logging.getLogger("stronghold.scheduler")

LATENESS = Histogram(
    "stronghold_round_lateness_seconds",
    "How late an object's pass started compared with its schedule",
    ["kind"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2, 5, 10),
    registry=registry,
)
# How late the pass running in this task started (each pass is its own task, so its own
# context): a HealthPolicy round reads it to tell its own lateness from a slow target.
_LATENESS: contextvars.ContextVar[float] = contextvars.ContextVar("lateness", default=0.0)


def lateness() -> float:
    """Seconds the current pass started after its scheduled time (0 outside a pass)."""
    return _LATENESS.get()


class Loop(Protocol):
    """One object between passes: what the kind keeps of it."""

    def observe(self, body: Mapping[str, Any]) -> bool:
        """Take in a watch event of the object; True when it deserves a pass now."""
        ...

    async def run(self) -> float:
        """One pass; returns the seconds until the next one."""
        ...

    def close(self) -> None:
        """The object is gone (or the operator stops): release what the loop holds."""
        ...

    async def settle(self) -> None:
        """The operator is stopping: let in-flight writes land (briefly)."""
        ...


L = TypeVar("L", bound=Loop)


class Scheduler(Generic[L]):
    """Every object of one kind: its loop, its next due time, its pass in progress.

    ``jitter`` spreads each next pass by +-that fraction so objects applied together do
    not run in lockstep for ever; a failed pass is logged and retried after
    ``retry_after`` seconds (an API hiccup must not stop the object); ``first_within``
    spreads the first passes after a restart over that many seconds.

    A new object (its generation not in its status) gets its first pass at once, for a
    GitOps tool waiting on it; beyond ``new_at_once`` (burst, per second) of them, as when
    thousands are created together, the rest are spread over ``new_within`` seconds: five
    thousand first rounds at once kept the operator behind its schedule for minutes, and
    in step every interval after (benchmarks/health.py).

    ``spread_second`` (0 to 1) brings an object's second pass forward by a random part of
    that much of the delay its first pass asked for: objects whose first passes came
    together (a restart, thousands applied at once) then spread over the interval at once,
    instead of keeping those few seconds for many intervals (the jitter of 10% alone takes
    some tens of passes to spread them over the interval), so their probes, the changes
    they see and the writes of those changes do not come in bursts (the storm, session 20).
    """

    def __init__(
        self,
        kind: str,
        *,
        jitter: float = 0.1,
        retry_after: float = 15.0,
        first_within: float = 2.0,
        new_at_once: tuple[int, float] = (100, 20.0),
        new_within: float = 10.0,
        spread_second: float = 0.0,
    ) -> None:
        self.kind = kind
        self.jitter = jitter
        self.retry_after = retry_after
        self.first_within = first_within
        self.new_within = new_within
        self.spread_second = spread_second
        self._first: set[str] = set()  # objects whose first pass has not ended yet
        self._new_now = TokenBucket(new_at_once[1], new_at_once[0], time.monotonic())
        self.loops: dict[str, L] = {}  # by uid
        self.schedule = Schedule()
        self._tasks: dict[str, asyncio.Task[None]] = {}  # passes in progress
        self._again: set[str] = set()  # woken mid-pass: the next pass starts at once
        self._tick = asyncio.Event()  # the schedule moved earlier
        self._runner: asyncio.Task[None] | None = None
        self._lateness = LATENESS.labels(kind)
        self._log = logging.getLogger(f"stronghold.scheduler.{kind}")

    def __len__(self) -> int:
        return len(self.loops)

    def track(
        self,
        uid: str,
        body: Mapping[str, Any],
        make: Callable[[], L],
        *,
        deleted: bool = False,
    ) -> L | None:
        """Take in one watch event: a new object gets a loop (``make``) and a first pass
        soon (at once when its spec generation is not in its status yet: a GitOps tool
        waits for that; the spread is for a restart, when every object has its status);
        a change its loop cares about moves its pass to now; a delete (``deleted``, or a
        deletionTimestamp) forgets it. Returns the object's loop (None once gone)."""
        if deleted or (body.get("metadata") or {}).get("deletionTimestamp") is not None:
            self.forget(uid)
            return None
        if self._runner is None or self._runner.done():
            # Started from a handler, not at startup: its tasks inherit the handler's
            # context, where kopf has set up what kopf.event() posts through.
            self._runner = asyncio.create_task(self.run_forever())
        loop = self.loops.get(uid)
        if loop is None:
            loop = self.loops[uid] = make()
            self._first.add(uid)
            now = time.monotonic()
            if not unobserved(body):
                spread = random.uniform(0, self.first_within)
            elif self._new_now.take(now):
                spread = 0.0
            else:
                spread = random.uniform(0, self.new_within)
            self.plan(uid, now + spread)
        elif loop.observe(body):
            self.plan(uid, time.monotonic(), earliest=True)
        return loop

    def plan(self, uid: str, when: float, *, earliest: bool = False) -> None:
        """Run ``uid``'s next pass at ``when`` (``earliest``: unless it is due sooner)."""
        head = self.schedule.next_at()
        if earliest:
            self.schedule.sooner(uid, when)
        else:
            self.schedule.at(uid, when)
        if head is None or when < head:
            self._tick.set()

    def forget(self, uid: str) -> None:
        """The object is gone: stop its pass and release its loop."""
        loop = self.loops.pop(uid, None)
        self.schedule.drop(uid)
        self._again.discard(uid)
        self._first.discard(uid)
        task = self._tasks.pop(uid, None)
        if task is not None:
            task.cancel()
        if loop is not None:
            loop.close()

    async def stop(self, settle_within: float = 10.0) -> None:
        """The operator is stopping: no new passes, cancel running ones, let writes land."""
        if self._runner is not None:
            self._runner.cancel()
        for task in self._tasks.values():
            task.cancel()
        loops = list(self.loops.values())
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*(lp.settle() for lp in loops)), settle_within)
        for loop in loops:
            loop.close()

    async def run_forever(self) -> None:
        """Start every pass that is due; sleep until the next one or a change of plan.

        Every object's passes hang on this one task: an unexpected error is logged and
        the loop goes on a second later, instead of silently ending all passes.
        """
        while True:
            try:
                await self._run_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                self._log.exception("%s schedule: unexpected error; continuing in 1 s", self.kind)
                await asyncio.sleep(1.0)

    async def _run_due(self) -> None:
        now = time.monotonic()
        for uid, due in self.schedule.pop_due(now):
            loop = self.loops.get(uid)
            if loop is None:
                continue
            running = self._tasks.get(uid)
            if running is not None and not running.done():
                self._again.add(uid)
                continue
            late = max(0.0, now - due)
            self._lateness.observe(late)
            self._tasks[uid] = asyncio.create_task(self._one(uid, loop, now, late))
        head = self.schedule.next_at()
        self._tick.clear()
        timeout = None if head is None else max(0.0, head - time.monotonic())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._tick.wait(), timeout)

    async def _one(self, uid: str, loop: L, started: float, late: float = 0.0) -> None:
        """One pass of one object, then its next slot."""
        _LATENESS.set(late)  # this task's own context
        try:
            delay = await loop.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The type and the API's own message (ApiError carries it; never Secret data).
            detail = str(exc)[:500]
            self._log.warning(
                "%s %s: pass failed: %s %s", self.kind, uid, type(exc).__name__, detail
            )
            delay = self.retry_after
        self._tasks.pop(uid, None)  # a finished task keeps its result and context alive
        if self.loops.get(uid) is not loop:
            return  # deleted meanwhile
        if uid in self._again:
            self._again.discard(uid)
            self.plan(uid, time.monotonic())
        else:
            self.plan(uid, started + delay * self._factor(uid))

    def _factor(self, uid: str) -> float:
        """What the next pass's delay is multiplied by: the jitter, or after the first pass
        the spread of ``spread_second``."""
        if uid in self._first:
            self._first.discard(uid)
            if self.spread_second:
                return 1.0 - random.uniform(0.0, self.spread_second)
        return 1 + random.uniform(-self.jitter, self.jitter)
