"""Logs probes: one bounded read of a workload's log lines since the check's cursor.

The reading is the platforms' (``platforms.logs``), injected as ``reader`` because probes
do not import platforms. The probe bounds it in time, counts what it read in /metrics and
turns every way of having nothing to read into an Unknown result; ``logic.health.logs``
counts the lines into the rules' windows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping

from docker.errors import DockerException
from prometheus_client import Counter

from stronghold_operator.metrics import registry
from stronghold_operator.models.errors import ApiError
from stronghold_operator.models.health import LogRead, LogsCheck
from stronghold_operator.models.scaling import TargetNotFound
from stronghold_operator.probes.base import ProbeResult
from stronghold_operator.probes.resources import TARGET_NOT_FOUND, describe_error

# (check, namespace of the policy, since in s since the epoch, byte cap) -> what was read.
LogReader = Callable[[LogsCheck, str, float, int], Awaitable[LogRead]]

LOGS_UNAVAILABLE = "LogsUnavailable"

BYTES = Counter(
    "stronghold_health_log_bytes_read_total",
    "Bytes of log lines read by logs checks",
    ["source"],
    registry=registry,
)
LINES = Counter(
    "stronghold_health_log_lines_read_total",
    "Log lines read by logs checks (a line read again by an overlapping read counts again)",
    ["source"],
    registry=registry,
)
DROPPED = Counter(
    "stronghold_health_log_lines_dropped_total",
    "Log lines dropped by logs checks: cut at the per-round byte cap, or too long",
    ["source"],
    registry=registry,
)


class LogsProbe:
    """Probes :class:`LogsCheck` sources through an injected reader."""

    def __init__(self, reader: LogReader | None = None) -> None:
        self.reader = reader

    async def probe(
        self,
        spec: LogsCheck,
        *,
        timeout_s: float,
        secrets: Mapping[str, str],
        namespace: str = "default",
        since_s: float,
    ) -> ProbeResult:
        del secrets  # no credentials: the operator's own API access, or the Docker socket
        where = spec.describe()
        if self.reader is None:
            return ProbeResult.unavailable(
                LOGS_UNAVAILABLE, f"{where}: no log source configured in this process"
            )
        kind = "compose" if spec.compose is not None else "pods"
        start = time.perf_counter()
        read_at = time.time()
        try:
            async with asyncio.timeout(timeout_s):
                got = await self.reader(spec, namespace, since_s, spec.max_bytes)
        except TimeoutError:
            return ProbeResult.unavailable(
                LOGS_UNAVAILABLE, f"{where}: no logs within {timeout_s:g}s", _ms(start)
            )
        except TargetNotFound as exc:
            return ProbeResult.unavailable(TARGET_NOT_FOUND, str(exc), _ms(start))
        except (LookupError, OSError, ApiError, DockerException) as exc:
            return ProbeResult.unavailable(
                LOGS_UNAVAILABLE, f"{where}: {describe_error(exc)}", _ms(start)
            )
        BYTES.labels(kind).inc(got.bytes_read)
        LINES.labels(kind).inc(len(got.lines))
        if got.dropped:
            DROPPED.labels(kind).inc(got.dropped)
        numbers: dict[str, int | float] = {
            "readAt": read_at,
            "bytesRead": got.bytes_read,
            "linesRead": len(got.lines),
            "linesDropped": got.dropped,
            "truncated": int(got.truncated),
        }
        if got.limit_ns is not None:
            numbers["limitNs"] = got.limit_ns
        return ProbeResult(latency_ms=_ms(start), numbers=numbers, lines=got.lines)


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
