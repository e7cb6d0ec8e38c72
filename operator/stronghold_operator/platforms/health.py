"""The HealthPolicy service's Secrets port on the real world: keys read with ``get``, cached."""

from __future__ import annotations

import asyncio
import time

from stronghold_operator.platforms.kube import Kube, SecretEntry, read_secret_entry

SECRET_TTL_S = 60.0  # Secrets are re-read (get) at most this often per key


class SecretCache:
    """Secret keys read with ``get`` and kept for :data:`SECRET_TTL_S`, shared by every
    policy of the process (a thousand policies usually share a few Secrets)."""

    def __init__(self, kube: Kube, ttl: float = SECRET_TTL_S) -> None:
        self.kube, self.ttl = kube, ttl
        self.entries: dict[tuple[str, str, str], tuple[float, SecretEntry]] = {}
        # One read per expired key: without it, every policy sharing a Secret re-read it at once.
        self.locks: dict[tuple[str, str, str], asyncio.Lock] = {}

    async def entry(self, namespace: str, name: str, key: str) -> SecretEntry:
        k = (namespace, name, key)
        hit = self.entries.get(k)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        async with self.locks.setdefault(k, asyncio.Lock()):
            hit = self.entries.get(k)  # read meanwhile by another policy's round
            if hit and hit[0] > time.monotonic():
                return hit[1]
            entry = await read_secret_entry(self.kube, *k)
            self.entries[k] = (time.monotonic() + self.ttl, entry)
            return entry

    def prune(self, now: float) -> None:
        """Drop expired values and their idle locks: those of deleted policies (and deleted
        Secrets) were kept for the life of the process."""
        for k in [k for k, (expires, _) in self.entries.items() if expires <= now]:
            del self.entries[k]
        for k in [
            k for k, lock in self.locks.items() if k not in self.entries and not lock.locked()
        ]:
            del self.locks[k]
