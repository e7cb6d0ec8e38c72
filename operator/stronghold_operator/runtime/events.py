"""Every Event the operator posts goes through :func:`post`: aggregated, rate-limited,
within the write budget.

The decisions (client-go's EventCorrelator: similar Events counted into one summary, a
spam filter per object, an operator-wide cap) are :class:`stronghold_operator.logic.events.
Correlator`'s; here they meet the clock, the budget (Events go after status writes) and
kopf's poster (``kopf.event``, which needs kopf's context: :func:`post` is called from a
handler or a scheduler pass, and the tasks it starts inherit that context).

Operator-wide cap: ``STRONGHOLD_EVENTS_QPS=2``, ``STRONGHOLD_EVENTS_BURST=30``
(``stronghold run --events-qps/--events-burst``): a human reads Events; 30 at once and
two a second after that is more than one can read, while a thousand objects changing
together would otherwise post a thousand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, cast

import kopf
from prometheus_client import Counter

from stronghold_operator.logic import events as logic
from stronghold_operator.logic.ratelimit import EVENT
from stronghold_operator.metrics import registry
from stronghold_operator.runtime.budget import budget

log = logging.getLogger("stronghold.events")

QPS_ENV, BURST_ENV = "STRONGHOLD_EVENTS_QPS", "STRONGHOLD_EVENTS_BURST"
FLUSH_S = 10.0  # how often ended windows' summaries go out

POSTED = Counter(
    "stronghold_events_posted_total",
    "Events handed to the API server: one Event, or a summary of similar ones",
    ["kind"],
    registry=registry,
)
DROPPED = Counter(
    "stronghold_events_dropped_total",
    "Events not posted: counted into a summary (aggregated), over an object's spam"
    " filter (spam), over the operator-wide cap (cap), or folded into a shared target's"
    " Event (shared)",
    ["why"],
    registry=registry,
)

Send = Callable[[Mapping[str, Any], str, str, str], None]


def _kopf_send(body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    obj = body if isinstance(body, kopf.Body) else kopf.Body(cast(kopf.RawBody, body))
    kopf.event(obj, type=type_, reason=reason, message=message)


def _ref(body: Mapping[str, Any]) -> dict[str, Any]:
    """What an Event names its object by (the summary keeps only this)."""
    meta = body.get("metadata") or {}
    slim = {k: meta[k] for k in ("namespace", "name", "uid") if k in meta}
    return {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": slim}


def _key(body: Mapping[str, Any]) -> str:
    meta = body.get("metadata") or {}
    uid = meta.get("uid")
    return str(uid) if uid else f"{body.get('kind')}/{meta.get('namespace')}/{meta.get('name')}"


class EventGate:
    """The process's Event poster (see the module docstring)."""

    def __init__(
        self,
        limits: logic.Limits,
        clock: Callable[[], float] = time.monotonic,
        send: Send | None = None,
    ) -> None:
        self.clock = clock
        self.correlator = logic.Correlator(limits, clock())
        self._send = send
        self._tasks: set[asyncio.Task[None]] = set()
        self._flusher = Flusher(lambda: len(self.correlator), self.flush)

    def post(self, body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Post an Event on ``body``'s object, unless the correlator says otherwise."""
        key, now = _key(body), self.clock()
        verdict = self.correlator.admit(key, type_, reason, message, now, _ref(body))
        if verdict != "post":
            DROPPED.labels(verdict).inc()
            if verdict == "aggregated":
                self._flusher.start()
            return
        self._deliver(body, type_, reason, message, "event")

    def post_priority(self, body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Post past the correlator and the operator-wide cap (still within the write
        budget): for the few Events that stand for many, bounded by their caller
        (runtime/storms.py: one per shared target and window)."""
        self._deliver(_ref(body), type_, reason, message, "target")

    def _deliver(
        self, body: Mapping[str, Any], type_: str, reason: str, message: str, kind: str
    ) -> None:
        # Now when the budget has a token (it nearly always has): Events keep their order.
        if budget().try_acquire(EVENT):
            self._emit(body, type_, reason, message, kind)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a sync handler's thread: kopf's poster takes it from there
            self._emit(body, type_, reason, message, kind)
            return
        self._spawn(loop, self._queued(body, type_, reason, message, kind))

    async def _queued(
        self, body: Mapping[str, Any], type_: str, reason: str, message: str, kind: str
    ) -> None:
        await budget().acquire(EVENT)
        self._emit(body, type_, reason, message, kind)

    def _emit(
        self, body: Mapping[str, Any], type_: str, reason: str, message: str, kind: str
    ) -> None:
        (self._send or _kopf_send)(body, type_, reason, message)
        POSTED.labels(kind).inc()

    def _spawn(self, loop: asyncio.AbstractEventLoop, work: Coroutine[Any, Any, None]) -> None:
        task = loop.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def flush(self) -> int:
        """Post the summaries of ended windows; returns how many went out."""
        now, posted = self.clock(), 0
        for s in self.correlator.flush(now):
            if not self.correlator.take_cap(now):
                DROPPED.labels("cap").inc()
                continue
            _, type_, reason = s.key
            minutes = f"{s.window / 60:g} min"
            message = f"{s.count} more like this in {minutes}, the last: {s.message}"[:1000]
            self._deliver(s.ref, type_, reason, message, "summary")
            posted += 1
        return posted

    def forget(self, body: Mapping[str, Any]) -> None:
        """The object is gone: its windows and pending summaries go (memory)."""
        self.correlator.forget(_key(body))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._flusher.close()


class Flusher:
    """Calls ``flush`` every FLUSH_S while ``pending()``: one task, started on demand in the
    running loop (none without a loop: a test calls flush itself)."""

    def __init__(self, pending: Callable[[], int], flush: Callable[[], object]) -> None:
        self._pending, self._flush = pending, flush
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._run())

    async def _run(self) -> None:
        while self._pending():
            await asyncio.sleep(FLUSH_S)
            self._flush()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


def _limits() -> logic.Limits:
    base = logic.Limits()
    return logic.Limits(
        qps=float(os.environ.get(QPS_ENV, base.qps)),
        burst=int(os.environ.get(BURST_ENV, base.burst)),
    )


_ONE: dict[str, EventGate] = {}  # the process's gate (a module-level singleton)


def gate() -> EventGate:
    """The process's gate, from the environment on first use."""
    one = _ONE.get("gate")
    if one is None:
        one = _ONE["gate"] = EventGate(_limits())
    return one


def configure(limits: logic.Limits, send: Send | None = None) -> EventGate:
    """Replace the process's gate (tests)."""
    one = _ONE["gate"] = EventGate(limits, send=send)
    return one


def post(body: Mapping[str, Any], *, type: str, reason: str, message: str) -> None:
    """Post an Event (the same arguments as ``kopf.event``)."""
    gate().post(body, type, reason, message)


def forget(body: Mapping[str, Any]) -> None:
    gate().forget(body)


def folded(n: int) -> None:
    """``n`` Events were folded into a shared target's Event (runtime/storms.py)."""
    DROPPED.labels("shared").inc(n)
