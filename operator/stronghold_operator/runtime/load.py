"""The operator's own load: how far its event loop stalls, and whether it is overloaded.

Every probe's clock runs on the one event loop; when the loop is saturated (thousands of
rounds due, a long parse, a garbage collection), a probe's measured time includes the
loop's stall, and a round starts late. :class:`LagMonitor` is a timer that measures its own
drift (it asks to wake after ``tick`` seconds; how much later it woke is the loop's lag),
the usual cheap way (Node's ``monitorEventLoopDelay``, aiomonitor's lag): four wake-ups a
second, a few hundred samples kept. A round reads :func:`round_load` after its probes: how
late it started (the scheduler's lateness) and the worst stall while they ran; the pure
judgement is logic/health/overload.py.

Metrics: ``stronghold_event_loop_lag_seconds`` (histogram), ``stronghold_operator_overloaded``
(1 for ``HOLD_S`` after a stall of ``OVERLOAD_LAG_S`` or more, a round more than half an
interval late, or a result discounted), ``stronghold_health_checks_discounted_total``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

from stronghold_operator.logic.health.overload import Load
from stronghold_operator.metrics import registry
from stronghold_operator.runtime.scheduler import lateness

TICK_S = 0.25  # four wake-ups a second: lag resolution well below any probe timeout
KEEP_S = 120.0  # samples kept: longer than any round (timeouts are seconds)
OVERLOAD_LAG_S = 1.0  # a stall this long makes the operator overloaded on its own
HOLD_S = 60.0  # overloaded stays 1 this long after the last sign (no flapping gauge)

LAG = Histogram(
    "stronghold_event_loop_lag_seconds",
    "How much later than asked the operator's event loop ran a timer (its own stall)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
    registry=registry,
)
DISCOUNTED = Counter(
    "stronghold_health_checks_discounted_total",
    "Slow check results not counted against their target: the operator was overloaded",
    registry=registry,
)


class LagMonitor:
    """A timer that measures its own drift (see the module docstring)."""

    def __init__(self, tick: float = TICK_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.tick = tick
        self.clock = clock
        self._samples: deque[tuple[float, float]] = deque(maxlen=int(KEEP_S / tick) + 1)
        self._due: float | None = None  # when the pending wake-up was asked for
        self._task: asyncio.Task[None] | None = None
        self._overloaded_until = 0.0

    def start(self) -> None:
        """Run on the current loop (again after a test's loop ended); cheap when running."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._due = None
            self._task = loop.create_task(self._run())

    async def _run(self) -> None:
        while True:
            self._due = self.clock() + self.tick
            await asyncio.sleep(self.tick)
            self.record(self.clock() - self._due)

    def record(self, lag: float) -> None:
        """One wake-up ``lag`` seconds late (``_run``; tests call it directly)."""
        now, lag = self.clock(), max(0.0, lag)
        self._samples.append((now, lag))
        LAG.observe(lag)
        if lag >= OVERLOAD_LAG_S:
            self.mark()

    def worst_since(self, since: float) -> float:
        """The worst stall seen from ``since`` until now, the pending wake-up's included
        (a stall is recorded when it ends: the one still going counts so far)."""
        now = self.clock()
        pending = max(0.0, now - self._due) if self._due is not None else 0.0
        worst = 0.0
        for at, lag in reversed(self._samples):  # newest first: a round's are the last few
            if at < since:
                break
            worst = max(worst, lag)
        return max(worst, pending)

    def mark(self) -> None:
        """A sign of overload now: the gauge says so for ``HOLD_S``."""
        self._overloaded_until = self.clock() + HOLD_S

    def overloaded(self) -> bool:
        return self.clock() < self._overloaded_until

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


_ONE: dict[str, LagMonitor] = {}


def monitor() -> LagMonitor:
    """The process's monitor (created on first use)."""
    one = _ONE.get("monitor")
    if one is None:
        one = _ONE["monitor"] = LagMonitor()
    return one


OVERLOADED = Gauge(
    "stronghold_operator_overloaded",
    "1 while the operator judges itself overloaded (a stall, a late round or a discounted"
    " result in the last minute): slow results are then not held against targets",
    registry=registry,
)
OVERLOADED.set_function(lambda: 1.0 if monitor().overloaded() else 0.0)


def round_load(began: float) -> Load:
    """How late the current round started (the scheduler's, in this task's context) and the
    worst stall since ``began`` (the round's start): read after its probes answered."""
    m = monitor()
    m.start()
    return Load(lateness_s=lateness(), lag_s=m.worst_since(began))


class RoundLoad:
    """The ``load`` port of one round (services/health.Ports): started with the round, read
    once after its probes; keeps what it read for :func:`note_round`."""

    __slots__ = ("began", "seen")

    def __init__(self) -> None:
        m = monitor()
        m.start()  # running before the probes: their stalls are measured
        self.began = m.clock()
        self.seen: Load | None = None

    def __call__(self) -> Load:
        self.seen = round_load(self.began)
        return self.seen


def note_round(load: Load | None, interval_s: float, discounted: int) -> None:
    """After a round: count discounted results; a late round or a discount marks overload."""
    if discounted:
        DISCOUNTED.inc(discounted)
    if discounted or (load is not None and load.behind(interval_s)):
        monitor().mark()


GC_PAUSE = Histogram(
    "stronghold_gc_pause_seconds",
    "How long the cyclic garbage collector held the process, by generation (a stall)",
    ["generation"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2),
    registry=registry,
)


class GcPauses:
    """A ``gc.callbacks`` entry timing each collection (two clock reads a collection)."""

    def __init__(self) -> None:
        self._began = 0.0
        self._by_generation = [GC_PAUSE.labels(str(g)) for g in range(3)]

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self._by_generation[info["generation"]].observe(time.perf_counter() - self._began)
