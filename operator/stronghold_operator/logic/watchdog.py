"""Notice a stalled watch: objects the apiserver has changed that the watch never delivered.

A quiet watch stream is normal on a quiet cluster, so silence alone proves nothing. What
proves a stall is an object whose current resourceVersion (from a fresh LIST) the watch has
not delivered for longer than ``grace``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta


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
