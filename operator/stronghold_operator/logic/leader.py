"""Leader election on a ``coordination.k8s.io/v1`` Lease: what one replica should do next.

The rules are client-go's (k8s.io/client-go/tools/leaderelection), so a Lease held by
Stronghold reads like any controller's: ``holderIdentity``, ``leaseDurationSeconds``,
``acquireTime``, ``renewTime``, ``leaseTransitions``. Expiry is judged on the observer's own
clock — how long the record has gone unchanged since *this* replica first saw it — never by
comparing another machine's ``renewTime`` with ours, so clock skew cannot hand out two leases.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from stronghold_operator.conditions import parse_rfc3339


def format_micro(when: datetime) -> str:
    """A Lease's MicroTime: UTC with microseconds and a trailing Z."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseRecord:
    holder: str  # "" when released
    duration_s: int
    acquire_time: datetime | None
    renew_time: datetime | None
    transitions: int

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> LeaseRecord:
        def when(key: str) -> datetime | None:
            return parse_rfc3339(spec.get(key))

        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            duration_s=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=when("acquireTime"),
            renew_time=when("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.duration_s,
            "leaseTransitions": self.transitions,
        }
        if self.acquire_time is not None:
            spec["acquireTime"] = format_micro(self.acquire_time)
        if self.renew_time is not None:
            spec["renewTime"] = format_micro(self.renew_time)
        return spec

    def key(self) -> tuple[str, datetime | None]:
        """What changes when the holder renews or another takes over."""
        return (self.holder, self.renew_time)


class Move(Enum):
    ACQUIRE = "acquire"  # write ourselves in as the new holder
    RENEW = "renew"  # we hold it: move renewTime on
    WAIT = "wait"  # another replica holds a live lease


@dataclass(frozen=True)
class Decision:
    move: Move
    record: LeaseRecord | None  # what to write (None for WAIT)
    holder: str  # who leads after this decision, as far as this replica knows


def decide(
    current: LeaseRecord | None,
    me: str,
    now: datetime,
    unchanged_for_s: float,
    duration_s: int,
) -> Decision:
    """The next move of replica ``me``.

    ``unchanged_for_s``: seconds, on this replica's monotonic clock, since it first saw the
    record as it is now (0 when it just changed). A lease nobody has renewed for its whole
    duration is expired and may be taken.
    """
    if current is None:
        new = LeaseRecord(me, duration_s, now, now, 0)
        return Decision(Move.ACQUIRE, new, me)
    if current.holder == me:
        return Decision(Move.RENEW, replace(current, duration_s=duration_s, renew_time=now), me)
    held_for = current.duration_s or duration_s
    if current.holder and unchanged_for_s < held_for:
        return Decision(Move.WAIT, None, current.holder)
    new = LeaseRecord(me, duration_s, now, now, current.transitions + 1)
    return Decision(Move.ACQUIRE, new, me)
