"""Which Events are posted: aggregation and rate limits (client-go's EventCorrelator).

- **Aggregation**: Events of one object with the same type and reason are *similar*. The
  first ``max_similar`` in a ``window`` are posted; later ones are counted, and when the
  window ends one summary ("N more like this") is posted in their place.
- **Spam filter**: a token bucket per object (client-go: 25 at once, then one per 5 min).
- **Operator-wide cap**: a token bucket for the whole process, so a thousand objects that
  change together (one shared target down) post a bounded burst, never a storm.

Pure: time is passed in; runtime/events.py posts what :meth:`Correlator.admit` lets
through and the summaries :meth:`Correlator.flush` returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from stronghold_operator.logic.ratelimit import TokenBucket

Verdict = Literal["post", "aggregated", "spam", "cap"]
Key = tuple[str, str, str]  # (object, type, reason)


@dataclass
class _Similar:
    since: float
    count: int = 0  # seen in this window
    suppressed: int = 0  # of which not posted (aggregated)
    message: str = ""  # the latest one's
    ref: Any = None  # what the summary is posted on (the caller's object)


@dataclass(frozen=True)
class Summary:
    """One Event standing for ``count`` similar ones that were not posted."""

    key: Key
    count: int
    message: str
    window: float
    ref: Any


@dataclass(frozen=True)
class Limits:
    """client-go's defaults for the per-object parts (events_cache.go), ours for the cap."""

    window: float = 600.0  # defaultAggregateIntervalInSeconds
    max_similar: int = 10  # defaultAggregateMaxEvents
    object_qps: float = 1 / 300  # defaultSpamQPS: one every 5 minutes
    object_burst: int = 25  # defaultSpamBurst
    qps: float = 2.0  # the whole operator
    burst: int = 30


class Correlator:
    """The Event decisions of one process (see the module docstring)."""

    def __init__(self, limits: Limits, now: float) -> None:
        self.limits = limits
        self._similar: dict[Key, _Similar] = {}
        self._due: list[Summary] = []  # summaries of windows that a new Event ended
        self._objects: dict[str, TokenBucket] = {}
        self._cap = TokenBucket(limits.qps, limits.burst, now)

    def admit(
        self, obj: str, type_: str, reason: str, message: str, now: float, ref: Any = None
    ) -> Verdict:
        """Post this Event, or why not. Similar ones past ``max_similar`` are counted for
        the summary; the spam filter and the cap drop (the caller counts them)."""
        key = (obj, type_, reason)
        s = self._similar.get(key)
        if s is None or now - s.since >= self.limits.window:
            if s is not None and s.suppressed:  # the ended window's summary: at next flush
                self._due.append(Summary(key, s.suppressed, s.message, self.limits.window, s.ref))
            s = self._similar[key] = _Similar(since=now)
        s.count += 1
        s.message, s.ref = message, ref
        if s.count > self.limits.max_similar:
            s.suppressed += 1
            return "aggregated"
        bucket = self._objects.get(obj)
        if bucket is None:
            lim = self.limits
            bucket = self._objects[obj] = TokenBucket(lim.object_qps, lim.object_burst, now)
        if not bucket.take(now):
            return "spam"
        return "post" if self._cap.take(now) else "cap"

    def take_cap(self, now: float) -> bool:
        """A summary spends the operator-wide cap too (not the per-object filter)."""
        return self._cap.take(now)

    def flush(self, now: float) -> list[Summary]:
        """Summaries of the windows that ended; forgets ended windows and per-object
        buckets that are full again (they behave exactly like a new one: memory)."""
        out, self._due = self._due, []
        window = self.limits.window
        for key, s in list(self._similar.items()):
            if now - s.since < window:
                continue
            if s.suppressed:
                out.append(Summary(key, s.suppressed, s.message, window, s.ref))
            del self._similar[key]
        for obj, bucket in list(self._objects.items()):
            if bucket.wait(now) == 0 and bucket.tokens >= bucket.burst:
                del self._objects[obj]
        return out

    def forget(self, obj: str) -> None:
        """The object is gone: its windows (and pending summaries) and bucket go."""
        self._objects.pop(obj, None)
        self._due = [d for d in self._due if d.key[0] != obj]
        for key in [k for k in self._similar if k[0] == obj]:
            del self._similar[key]

    def __len__(self) -> int:
        return len(self._similar) + len(self._objects)
