"""Pure decisions of the write budget toward the API server (runtime/budget.py runs them).

A token bucket (client-go's ``flowcontrol`` model: ``qps`` tokens a second, at most
``burst`` saved), the back-off after a refused write, and which status writes go first.
Time is passed in (seconds on any monotonic clock), so every decision is testable.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

# Priorities: lower goes first. A state change a reader acts on beats a routine refresh,
# which beats an Event (an Event only tells what status already says).
SIGNIFICANT = 0
ROUTINE = 1
EVENT = 2

# Answers worth retrying: the API server is overloaded or briefly broken.
RETRYABLE = frozenset({429, 500, 502, 503, 504})


class TokenBucket:
    """``qps`` tokens a second, at most ``burst`` saved; a pause (Retry-After) stops all."""

    __slots__ = ("burst", "paused_until", "qps", "stamp", "tokens")

    def __init__(self, qps: float, burst: int, now: float) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError(f"qps must be > 0 and burst >= 1 (got {qps}, {burst})")
        self.qps, self.burst = qps, burst
        self.tokens = float(burst)  # a fresh process may spend its burst at once
        self.stamp = now
        self.paused_until = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.qps)
            self.stamp = now

    def wait(self, now: float) -> float:
        """Seconds until a token can be taken (0: now)."""
        self._refill(now)
        pause = max(0.0, self.paused_until - now)
        short = max(0.0, (1.0 - self.tokens) / self.qps)
        return max(pause, short)

    def take(self, now: float) -> bool:
        """Take a token if one is there now."""
        if self.wait(now) > 0:
            return False
        self.tokens -= 1.0
        return True

    def pause(self, now: float, seconds: float) -> None:
        """Nothing leaves before ``now + seconds`` (the API server said Retry-After)."""
        self.paused_until = max(self.paused_until, now + seconds)


def backoff_delay(
    attempt: int,
    retry_after: float | None,
    base: float = 1.0,
    cap: float = 60.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds before retry number ``attempt`` (0 for the first retry).

    Exponential (``base * 2**attempt``, at most ``cap``) with "equal jitter": between half
    and all of it, so objects refused together do not come back together. A Retry-After
    from the API server is a floor (never retried sooner), plus up to a fifth more of jitter.
    """
    step = min(cap, base * 2.0 ** min(attempt, 30))
    delay = step * (0.5 + 0.5 * rand())
    if retry_after is not None and retry_after > 0:
        delay = max(delay, retry_after * (1.0 + 0.2 * rand()))
    return delay


def is_significant(delta: Mapping[str, Any], moved: int, first: bool) -> bool:
    """A status write a reader acts on (it goes before routine ones): the object's first
    status, a new observedGeneration, or a condition whose status or reason moved."""
    return first or moved > 0 or "observedGeneration" in delta
