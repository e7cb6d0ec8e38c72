"""Two or more replicas, one active: leader election on a Lease (``stronghold run --leader-elect``).

A follower waits, serving only liveness and /metrics. The leader renews every ``retry_s``;
when it cannot renew for ``renew_deadline_s`` it closes the fence (platforms/fence.py) and
the process ends — the Deployment restarts it as a follower, as client-go's controllers do.
A clean shutdown releases the Lease so a follower takes over at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from prometheus_client import Gauge

from stronghold_operator.conditions import utcnow
from stronghold_operator.logic.leader import Decision, LeaseRecord, Move, decide
from stronghold_operator.metrics import registry
from stronghold_operator.platforms import fence
from stronghold_operator.platforms.kube import (
    LEASES,
    ApiError,
    ApiUnreachable,
    Kube,
    is_conflict,
    is_not_found,
)

log = logging.getLogger("stronghold.leader")

LEADING = Gauge(
    "stronghold_leader",
    "1 while this replica holds the leader Lease (0: a follower); absent without --leader-elect",
    registry=registry,
)
TRANSITIONS = Gauge(
    "stronghold_leader_transitions",
    "The Lease's leaseTransitions as this replica last read it",
    registry=registry,
)

# client-go's defaults (LeaseDuration 15 s, RenewDeadline 10 s, RetryPeriod 2 s).
DURATION_S = 15
RENEW_DEADLINE_S = 10.0
RETRY_S = 2.0


class LeadershipLost(RuntimeError):
    """The Lease could not be renewed in time, or another replica holds it now."""


class Elector:
    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        identity: str,
        *,
        duration_s: int = DURATION_S,
        renew_deadline_s: float = RENEW_DEADLINE_S,
        retry_s: float = RETRY_S,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = utcnow,
    ) -> None:
        if not 0 < renew_deadline_s < duration_s:
            raise ValueError("the renew deadline must be shorter than the lease duration")
        self.kube, self.namespace, self.name, self.identity = kube, namespace, name, identity
        self.duration_s, self.renew_deadline_s, self.retry_s = duration_s, renew_deadline_s, retry_s
        self._monotonic, self._wall = monotonic, wall
        self._seen: tuple[tuple[str, datetime | None], float] | None = None
        self._renewed_at: float | None = None
        self.holder = ""
        fence.enable()
        LEADING.set(0)

    async def acquire(self) -> None:
        """Return once this replica leads (logging who leads meanwhile)."""
        last_holder = None
        while not await self._try():
            if self.holder != last_holder:
                log.info(
                    "following: the Lease %s/%s is held by %s",
                    self.namespace,
                    self.name,
                    self.holder or "nobody",
                )
                last_holder = self.holder
            await asyncio.sleep(self.retry_s)
        log.info(
            "leading: acquired the Lease %s/%s as %s", self.namespace, self.name, self.identity
        )

    async def hold(self) -> None:
        """Renew until it fails for the renew deadline; then raise :class:`LeadershipLost`."""
        while True:
            await asyncio.sleep(self.retry_s)
            renewed = await self._try()
            if renewed:
                continue
            assert self._renewed_at is not None  # set by acquire()
            if self.holder and self.holder != self.identity:
                self._lose(f"the Lease is now held by {self.holder}")
            if self._monotonic() - self._renewed_at >= self.renew_deadline_s:
                self._lose(f"not renewed for {self.renew_deadline_s:g} s")

    async def release(self) -> None:
        """Give the Lease up (a clean shutdown): the next replica need not wait it out."""
        fence.revoke()
        LEADING.set(0)
        try:
            obj = await self.kube.get(LEASES, self.name, self.namespace)
            if obj.get("spec", {}).get("holderIdentity") != self.identity:
                return
            obj["spec"] = {**obj["spec"], "holderIdentity": "", "leaseDurationSeconds": 1}
            await self.kube.replace(LEASES, self.namespace, obj)
            log.info("released the Lease %s/%s", self.namespace, self.name)
        except (ApiError, ApiUnreachable) as exc:
            log.warning("could not release the Lease %s/%s: %s", self.namespace, self.name, exc)

    def _lose(self, why: str) -> None:
        fence.revoke()
        LEADING.set(0)
        raise LeadershipLost(f"lost the Lease {self.namespace}/{self.name}: {why}")

    async def _try(self) -> bool:
        """One read and, if ours to take or renew, one write. True when we lead after it."""
        started = self._monotonic()
        try:
            obj: dict[str, Any] | None = await self.kube.get(LEASES, self.name, self.namespace)
        except ApiError as exc:
            if not is_not_found(exc):
                log.warning("reading the Lease: %s", exc)
                return False
            obj = None
        except ApiUnreachable as exc:
            log.warning("reading the Lease: %s", exc)
            return False
        record = LeaseRecord.from_spec(obj.get("spec") or {}) if obj is not None else None
        decision = decide(
            record, self.identity, self._wall(), self._unchanged_for(record), self.duration_s
        )
        self.holder = decision.holder
        if record is not None:
            TRANSITIONS.set(record.transitions)
        if decision.move is Move.WAIT:
            return False
        try:
            await self._write(obj, decision)
        except ApiError as exc:
            if not is_conflict(exc):
                log.warning("writing the Lease: %s", exc)
            return False  # a 409: another replica wrote first; read again next round
        except ApiUnreachable as exc:
            log.warning("writing the Lease: %s", exc)
            return False
        # The fence closes before any other replica could see the lease expire: it counts
        # from before our write, the others from when they first saw the written record.
        self._renewed_at = started
        fence.grant(started + self.renew_deadline_s)
        LEADING.set(1)
        self.holder = self.identity
        return True

    def _unchanged_for(self, record: LeaseRecord | None) -> float:
        now = self._monotonic()
        key = record.key() if record is not None else ("", None)
        if self._seen is None or self._seen[0] != key:
            self._seen = (key, now)
        return now - self._seen[1]

    async def _write(self, obj: dict[str, Any] | None, decision: Decision) -> None:
        assert decision.record is not None
        spec = decision.record.to_spec()
        if obj is None:
            body = {
                "apiVersion": LEASES.api_version,
                "kind": LEASES.kind,
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": spec,
            }
            await self.kube.create(LEASES, self.namespace, body)
        else:
            # resourceVersion stays in metadata: a write over a newer record is a 409.
            await self.kube.replace(LEASES, self.namespace, {**obj, "spec": spec})
