"""One Event per shared target when many policies change on it together (issue 26).

The decisions are :class:`stronghold_operator.logic.health.storm.Storms`'s; here they meet
the clock and the Event gate. The summary is posted on the first policy that reported the
target in the window: an Event needs an involved object, and that one exists without the
downward API, lives in a namespace its owners can read (``kubectl get events -n``,
``kubectl describe``), and needs no RBAC beyond what every policy's Events need. It goes
past the operator-wide cap (not past the write budget): one per target and direction per
window is bounded by the number of targets, and in a storm it is the Event worth reading,
the one the cap would otherwise drop behind the first thirty policies' own. Once it is
posted, the policies' own Events about that target fold into it (:meth:`StormGate.fold`:
counted as ``stronghold_events_dropped_total{why="shared"}`` and in its closing count).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from stronghold_operator.logic.health import storm as logic
from stronghold_operator.runtime import events


def _key(body: Mapping[str, Any]) -> str:
    meta = body.get("metadata") or {}
    return str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")


class StormGate:
    """The process's shared-cause summaries (see the module docstring)."""

    def __init__(
        self,
        storms: logic.Storms | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.storms = storms or logic.Storms()
        self.clock = clock
        self._flusher = events.Flusher(lambda: len(self.storms), self.flush)

    def report(self, body: Mapping[str, Any], target: str, direction: logic.Direction) -> None:
        """``body``'s policy has a check on ``target`` that changed in ``direction``."""
        meta = body.get("metadata") or {}
        name = f"{meta.get('namespace')}/{meta.get('name')}"
        summary = self.storms.report(target, direction, _key(body), name, body, self.clock())
        if summary is not None:
            self._post(summary)
        self._flusher.start()

    def covered(self, body: Mapping[str, Any], target: str, direction: logic.Direction) -> bool:
        """An announced storm on ``target`` counted ``body``'s policy: its Events fold."""
        return self.storms.covered(target, direction, _key(body), self.clock())

    def fold(self, target: str, direction: logic.Direction, n: int) -> None:
        """``n`` of a policy's own Events were not posted: the storm's closing Event
        counts them."""
        if n > 0:
            self.storms.fold(target, direction, n)
            events.folded(n)

    def _post(self, s: logic.Summary) -> None:
        type_ = "Warning" if s.direction == "failing" else "Normal"
        events.gate().post_priority(s.ref, type_, s.reason, s.message)

    def flush(self) -> int:
        """Post the closing counts of ended windows; returns how many went out."""
        out = self.storms.flush(self.clock())
        for s in out:
            self._post(s)
        return len(out)

    def forget(self, body: Mapping[str, Any]) -> None:
        self.storms.forget(_key(body))

    async def close(self) -> None:
        await self._flusher.close()


_ONE: dict[str, StormGate] = {}


def gate() -> StormGate:
    one = _ONE.get("gate")
    if one is None:
        one = _ONE["gate"] = StormGate()
    return one


def report(body: Mapping[str, Any], target: str, direction: logic.Direction) -> None:
    gate().report(body, target, direction)


def covered(body: Mapping[str, Any], target: str, direction: logic.Direction) -> bool:
    return gate().covered(body, target, direction)


def fold(target: str, direction: logic.Direction, n: int) -> None:
    gate().fold(target, direction, n)


def forget(body: Mapping[str, Any]) -> None:
    gate().forget(body)
