"""Notice a stalled watch: objects the apiserver has changed that the watch never delivered.

A quiet watch stream is normal on a quiet cluster, so silence alone proves nothing. What
proves a stall is an object whose current resourceVersion (from a fresh LIST) the watch has
not delivered for longer than ``grace``.

Objects being deleted are left out: once kopf has stopped serving one, nothing of ours
follows it, and one that lingers (another controller's finalizer) would otherwise fail the
liveness probe for ever, restarting the operator in a loop.

An apiserver that does not answer the LIST (down, frozen, overloaded) is not a stuck
operator, and restarting the operator cannot help it: the probe then passes, and the lag
clocks start again once the apiserver answers, so changes the watch could not deliver
during the outage are not held against it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any


def versions(items: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """uid -> resourceVersion of the listed objects that are not being deleted."""
    return {
        str(meta["uid"]): str(meta["resourceVersion"])
        for meta in (item["metadata"] for item in items)
        if not meta.get("deletionTimestamp")
    }


@dataclass
class WatchTracker:
    grace: timedelta = timedelta(seconds=120)
    seen: dict[str, str] = field(default_factory=dict)  # uid -> last resourceVersion watched
    lagging_since: dict[str, datetime] = field(default_factory=dict)

    def observe(self, uid: str, resource_version: str) -> None:
        """The watch delivered this version of the object.

        Reported again at every check: only a version the watch had not delivered before
        stops the lag clock (restarting it at every check hid a stalled watch for ever).
        """
        if self.seen.get(uid) != resource_version:
            self.seen[uid] = resource_version
            self.lagging_since.pop(uid, None)

    def unreachable(self) -> None:
        """The apiserver did not answer the LIST: nothing could be delivered meanwhile."""
        self.lagging_since.clear()

    def forget(self, uid: str) -> None:
        self.seen.pop(uid, None)
        self.lagging_since.pop(uid, None)

    def stale(self, listed: Mapping[str, str], now: datetime) -> list[str]:
        """Compare a fresh listing (uid -> resourceVersion); return uids lagging past grace."""
        for uid in list(self.lagging_since):
            if uid not in listed:
                del self.lagging_since[uid]
        out: list[str] = []
        for uid, rv in listed.items():
            if self.seen.get(uid) == rv:
                self.lagging_since.pop(uid, None)
                continue
            since = self.lagging_since.setdefault(uid, now)
            if now - since > self.grace:
                out.append(uid)
        return out


def liveness_failure(listed: Mapping[str, str] | None, stale: list[str]) -> str | None:
    """Why the liveness probe fails, or None while the operator is alive.

    ``listed`` is None when the apiserver did not answer the LIST in time: that alone never
    fails the probe (a restart cannot make the apiserver answer). Only undelivered changes
    past the grace, seen in an answer, do.
    """
    if listed is None or not stale:
        return None
    return f"watch stalled: {len(stale)} object change(s) not delivered"
