"""Notice a stalled watch: objects the apiserver has changed that the watch never delivered.

A quiet watch stream is normal on a quiet cluster, so silence alone proves nothing. What
proves a stall is an object whose current resourceVersion (from a fresh LIST) the watch has
not delivered for longer than ``grace``.

Objects being deleted are left out: once kopf has stopped serving one, nothing of ours
follows it, and one that lingers (another controller's finalizer) would otherwise fail the
liveness probe for ever, restarting the operator in a loop.
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
        """The watch delivered this version of the object."""
        self.seen[uid] = resource_version
        self.lagging_since.pop(uid, None)

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
