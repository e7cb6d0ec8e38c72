"""The write budget toward the API server: every status patch and Event post passes here.

One client-side token bucket per process (client-go's QPS and burst), a queue in which
significant status writes go before routine ones and Events last, ``Retry-After``
honoured (a 429 pauses the whole budget that long) and exponential back-off with jitter
after a refused write. The decisions are in :mod:`stronghold_operator.logic.ratelimit`.

A write also waits for one of ``WRITES_IN_FLIGHT`` slots, and builds its patch only when
it has one: were it to pass the budget and then queue for one of the client's connections
(``platforms.kube.API_CONNECTIONS``) with its patch already made, a slow API server would
receive stale states one after another (the storm at 5,000 policies: a PATCH waited 7 s at
the median for a connection), and the merging of a queued object's states (runtime/status.py)
would not happen. Two connections stay free for reads.

Defaults, ``STRONGHOLD_API_QPS=50`` and ``STRONGHOLD_API_BURST=100`` (``stronghold run
--api-qps/--api-burst``): client-go's own defaults (5/10) are for one controller among
the many of a controller manager; kubectl uses 50 a second. A burst of 100 keeps the
first second of a storm at half the API server's default 200 mutating requests in flight
(``--max-mutating-requests-inflight``), which a storm of 265 exceeded (issue 26).
"""

from __future__ import annotations

import asyncio
import heapq
import os
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, TypeVar

from prometheus_client import Counter, Gauge, Histogram

from stronghold_operator.logic import ratelimit
from stronghold_operator.metrics import registry
from stronghold_operator.platforms.kube import API_CONNECTIONS

T = TypeVar("T")

QPS_ENV, BURST_ENV = "STRONGHOLD_API_QPS", "STRONGHOLD_API_BURST"
DEFAULT_QPS, DEFAULT_BURST = 50.0, 100
# A refused write is retried after at most this long (429/5xx: the API server is in
# trouble); unreachable, sooner: a connection attempt costs it little, and status must
# follow the object again soon after an outage ends.
BACKOFF_CAP_S = 60.0
UNREACHABLE_CAP_S = 10.0
WRITES_IN_FLIGHT = API_CONNECTIONS - 2

_PRIORITY = {ratelimit.SIGNIFICANT: "significant", ratelimit.ROUTINE: "routine", 2: "event"}
QUEUE = Gauge(
    "stronghold_api_write_queue_depth",
    "Writes to the API server waiting for the client-side budget",
    registry=registry,
)
IN_FLIGHT = Gauge(
    "stronghold_api_writes_in_flight",
    "Status and Incident writes sent to the API server and not yet answered",
    registry=registry,
)
WAIT = Histogram(
    "stronghold_api_write_wait_seconds",
    "Time a write waited for the client-side budget (a token, and a slot for a status or"
    " Incident write)",
    ["priority"],
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
    registry=registry,
)
LATENCY = Histogram(
    "stronghold_api_write_duration_seconds",
    "Status patches: the API server's answer time (queueing excluded)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=registry,
)
WRITES = Counter(
    "stronghold_api_writes_total",
    "Writes (status patches, Event posts) let through by the budget",
    ["priority"],
    registry=registry,
)
REFUSED = Counter(
    "stronghold_api_writes_refused_total",
    "Writes (status patches, Incident creates and deletes) the API server refused or did"
    " not answer, by HTTP code ('unreachable': no answer); an answer the caller expects"
    " (409 creating what exists, 404 deleting what is gone) is not a refusal",
    ["code"],
    registry=registry,
)
RETRIED = Counter(
    "stronghold_api_writes_retried_total",
    "Status patches retried after a refusal, by the refusal's HTTP code",
    ["code"],
    registry=registry,
)


def error_status(exc: BaseException) -> tuple[int | None, float | None]:
    """(HTTP code, Retry-After seconds) of an API error, whatever client raised it.

    Duck-typed so it serves our ``ApiError`` (``status`` an int, ``retry_after``), an
    error with ``headers``, lightkube's raw ``ApiError``
    (``status`` a Status object with ``code``) and httpx's ``HTTPStatusError``
    (``response.status_code``/``headers``). (None, None): no answer (unreachable).
    """
    status = getattr(exc, "status", None)
    response = getattr(exc, "response", None)
    code: int | None = None
    if isinstance(status, int):
        code = status
    elif isinstance(getattr(status, "code", None), int):
        code = int(status.code)  # type: ignore[union-attr]
    elif isinstance(getattr(response, "status_code", None), int):
        code = int(response.status_code)  # type: ignore[union-attr]
    after = getattr(exc, "retry_after", None)
    if isinstance(after, int | float):
        return code, float(after)
    headers = getattr(exc, "headers", None) or getattr(response, "headers", None)
    return code, _seconds(headers.get("Retry-After") if isinstance(headers, Mapping) else None)


def _seconds(value: Any) -> float | None:
    # The API server sends whole seconds; an HTTP date (allowed by RFC 9110) is ignored.
    try:
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None


def _code_label(code: int | None) -> str:
    return "unreachable" if code is None else str(code)


class WriteBudget:
    """The process's budget (see the module docstring); :func:`budget` returns it."""

    def __init__(
        self,
        qps: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        in_flight: int = WRITES_IN_FLIGHT,
    ) -> None:
        self.clock = clock
        self.bucket = ratelimit.TokenBucket(qps, burst, clock())
        self.max_in_flight = max(1, in_flight)
        self.in_flight = 0
        self._waiters: list[tuple[int, int, bool, asyncio.Future[None]]] = []
        self._seq = 0
        self._pump: asyncio.Task[None] | None = None
        self._slot_freed: asyncio.Event | None = None

    async def acquire(self, priority: int, slot: bool = False) -> None:
        """Wait for a token (and, with ``slot``, a write slot: :meth:`release` it): by
        priority (lower first), then first come first served."""
        start = self.clock()
        if self._waiters or (slot and not self._slot_free()) or not self.bucket.take(start):
            fut = asyncio.get_running_loop().create_future()
            self._seq += 1
            heapq.heappush(self._waiters, (priority, self._seq, slot, fut))
            QUEUE.inc()
            try:
                self._wake()
                await fut
            except asyncio.CancelledError:
                if slot and fut.done() and not fut.cancelled():
                    self.release()  # granted as it was cancelled: the slot goes back
                raise
            finally:
                QUEUE.dec()
        elif slot:
            self._take_slot()
        WAIT.labels(_PRIORITY.get(priority, str(priority))).observe(self.clock() - start)
        WRITES.labels(_PRIORITY.get(priority, str(priority))).inc()

    def _slot_free(self) -> bool:
        return self.in_flight < self.max_in_flight

    def _take_slot(self) -> None:
        self.in_flight += 1
        IN_FLIGHT.inc()

    def release(self) -> None:
        """A write's slot back (its answer came, or it failed)."""
        self.in_flight -= 1
        IN_FLIGHT.dec()
        if self._slot_freed is not None:
            self._slot_freed.set()

    def _wake(self) -> None:
        loop = asyncio.get_running_loop()
        if self._pump is None or self._pump.done() or self._pump.get_loop() is not loop:
            self._slot_freed = asyncio.Event()
            self._pump = loop.create_task(self._hand_out())

    async def _hand_out(self) -> None:
        """Hand tokens (and slots) to the waiters in order as the bucket refills and
        writes are answered (one task)."""
        assert self._slot_freed is not None
        while self._waiters:
            _, _, slot, fut = self._waiters[0]
            if fut.done():  # a cancelled waiter (its object went) takes nothing
                heapq.heappop(self._waiters)
                continue
            if slot and not self._slot_free():
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            now = self.clock()
            wait = self.bucket.wait(now)
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            heapq.heappop(self._waiters)
            self.bucket.take(now)
            if slot:
                self._take_slot()
            fut.set_result(None)

    def try_acquire(self, priority: int) -> bool:
        """A token now, without waiting (nobody queued before it), or False."""
        if self._waiters or not self.bucket.take(self.clock()):
            return False
        WRITES.labels(_PRIORITY.get(priority, str(priority))).inc()
        return True

    @property
    def queued(self) -> int:
        return len(self._waiters)

    async def send(
        self, priority: int, call: Callable[[], Awaitable[T]], answers: Collection[int] = ()
    ) -> T:
        """One write within the budget and a write slot (``call`` builds its patch once it
        has both): its latency and refusals are recorded (an error whose code is in
        ``answers`` is raised uncounted: the caller expects it); a 429's Retry-After holds
        every write of the process."""
        await self.acquire(priority, slot=True)
        start = self.clock()
        try:
            return await call()
        except Exception as exc:
            code, after = error_status(exc)
            if code not in answers:
                REFUSED.labels(_code_label(code)).inc()
            if code == 429:
                self.bucket.pause(self.clock(), after if after is not None else 1.0)
            raise
        finally:
            self.release()
            LATENCY.observe(self.clock() - start)

    def retry_delay(self, exc: BaseException, attempt: int, base: float) -> float:
        """Seconds before retry number ``attempt`` of a failed write (counted)."""
        code, after = error_status(exc)
        cap = UNREACHABLE_CAP_S if code is None else BACKOFF_CAP_S
        RETRIED.labels(_code_label(code)).inc()
        return ratelimit.backoff_delay(attempt, after, base=base, cap=max(cap, base))


def retryable(exc: BaseException) -> bool:
    """Worth trying again as it was: no answer, 429 or a 5xx (not a refusal of the write)."""
    code, _ = error_status(exc)
    if code is None:  # connection errors and timeouts, of any client library
        return isinstance(exc, OSError) or type(exc).__module__.startswith(("aiohttp", "httpx"))
    return code in ratelimit.RETRYABLE


_ONE: dict[str, WriteBudget] = {}  # the process's budget (a module-level singleton)


def budget() -> WriteBudget:
    """The process's budget, from ``STRONGHOLD_API_QPS``/``_BURST`` on first use."""
    one = _ONE.get("budget")
    if one is None:
        qps = float(os.environ.get(QPS_ENV, DEFAULT_QPS))
        burst = int(os.environ.get(BURST_ENV, DEFAULT_BURST))
        one = _ONE["budget"] = WriteBudget(qps, burst)
    return one


def configure(qps: float, burst: int) -> WriteBudget:
    """Replace the process's budget (tests; ``stronghold run`` sets the environment)."""
    one = _ONE["budget"] = WriteBudget(qps, burst)
    return one
