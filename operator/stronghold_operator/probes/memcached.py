"""Memcached probes: the text protocol's ``stats`` over asyncio streams, connections reused.

``stats`` is the guide's own check (``echo stats | nc``). It needs no client library and
never blocks the event loop; one connection per target is kept and used one probe at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from stronghold_operator.models.health import MemcachedCheck
from stronghold_operator.probes.base import ProbeResult

# stats name -> measurement name
_NUMBERS = {
    "get_hits": "getHits",
    "get_misses": "getMisses",
    "cmd_get": "cmdGet",
    "evictions": "evictionsTotal",
    "curr_connections": "currConnections",
    "bytes": "bytes",
    "limit_maxbytes": "limitMaxBytes",
    "curr_items": "currItems",
    "uptime": "uptimeSeconds",
    # The server's clock: with uptime, its start time (a restart between probes is a
    # counter reset even when the new counters are above the old ones).
    "time": "sampledAt",
}
MAX_STATS = 64 * 1024


def parse_stats(raw: bytes) -> dict[str, float]:
    """``STAT name value`` lines into the numbers we keep."""
    out: dict[str, float] = {}
    for line in raw.decode("ascii", "replace").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "STAT" and parts[1] in _NUMBERS:
            try:
                out[_NUMBERS[parts[1]]] = float(parts[2]) if "." in parts[2] else int(parts[2])
            except ValueError:
                continue
    return out


@dataclass
class _Target:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None

    async def drop(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(TimeoutError, OSError):
                await asyncio.wait_for(self.writer.wait_closed(), 1)
        self.reader = self.writer = None


class MemcachedProbe:
    """Probes :class:`MemcachedCheck` targets; one instance per operator process."""

    def __init__(self) -> None:
        self._targets: dict[tuple[str, int], _Target] = {}

    async def close(self) -> None:
        for t in self._targets.values():
            await t.drop()

    async def probe(
        self, spec: MemcachedCheck, *, timeout_s: float, secrets: Mapping[str, str]
    ) -> ProbeResult:
        del secrets  # memcached has no authentication in the text protocol
        key = (spec.host, spec.port)
        target = self._targets.setdefault(key, _Target())
        start = time.perf_counter()
        holding = False
        try:
            async with asyncio.timeout(timeout_s), target.lock:
                holding = True
                raw = await self._stats(target, spec)
        except TimeoutError:
            # Only a timeout on our own request makes the connection suspect; one spent
            # waiting for the lock must not drop the connection another probe is using.
            if holding:
                await target.drop()
            return ProbeResult.failed("Timeout", f"no answer within {timeout_s:g}s", _ms(start))
        except (OSError, asyncio.IncompleteReadError, ConnectionError) as exc:
            await target.drop()
            return ProbeResult.failed(
                "Unreachable", f"{spec.address}: {exc.__class__.__name__}: {exc}", _ms(start)
            )
        numbers = parse_stats(raw)
        if "cmdGet" not in numbers:
            await target.drop()
            return ProbeResult.failed("Error", f"{spec.address}: not a memcached stats answer")
        return ProbeResult(latency_ms=_ms(start), numbers=numbers)

    async def _stats(self, target: _Target, spec: MemcachedCheck) -> bytes:
        for attempt in (1, 2):
            if target.writer is None or target.writer.is_closing():
                target.reader, target.writer = await asyncio.open_connection(
                    spec.host, spec.port, limit=MAX_STATS
                )
            assert target.reader is not None and target.writer is not None
            try:
                target.writer.write(b"stats\r\n")
                await target.writer.drain()
                return await target.reader.readuntil(b"END\r\n")
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                # A kept connection the server closed meanwhile: reconnect once.
                await target.drop()
                if attempt == 2:
                    raise
        raise ConnectionError("unreachable")  # pragma: no cover - loop always returns/raises


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
