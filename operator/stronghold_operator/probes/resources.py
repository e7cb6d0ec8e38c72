"""Resources probes: CPU and memory usage of a workload's replicas, with their basis.

The reading itself is the platforms' (``platforms.usage.read_usage``, the same readers as
ScalingPolicy): it is injected as ``reader`` because probes do not import platforms. The
probe only bounds it in time and turns every way of having nothing to measure into an
Unknown result with a reason; ``logic.health`` computes and judges the percentages.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping

from docker.errors import DockerException

from stronghold_operator.models.errors import ApiError
from stronghold_operator.models.health import ResourcesCheck
from stronghold_operator.models.scaling import MissingBasis, ReplicaUsage, TargetNotFound, TargetRef
from stronghold_operator.probes.base import ProbeResult

# (target, namespace of the policy) -> usage of every running replica.
UsageReader = Callable[[TargetRef, str], Awaitable[list[ReplicaUsage]]]

# Reasons of Unknown results (also in docs/healthpolicy.md).
METRICS_UNAVAILABLE = "MetricsUnavailable"
NO_METRICS = "NoMetrics"
TARGET_NOT_FOUND = "TargetNotFound"
MISSING_REQUESTS = "MissingRequests"
MISSING_LIMITS = "MissingLimits"


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, ApiError):
        return f"Kubernetes API answered {exc.status} {exc.reason}".strip()
    text = str(exc).splitlines()[0] if str(exc) else ""
    if text and isinstance(exc, LookupError | ConnectionError):
        return text[:300]  # ours, and already say what is missing
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


class ResourcesProbe:
    """Probes :class:`ResourcesCheck` targets through an injected usage reader."""

    def __init__(self, reader: UsageReader | None = None) -> None:
        self.reader = reader

    async def probe(
        self,
        spec: ResourcesCheck,
        *,
        timeout_s: float,
        secrets: Mapping[str, str],
        namespace: str = "default",
    ) -> ProbeResult:
        del secrets  # no credentials: the operator's own API access, or the Docker socket
        ref = spec.target_ref
        where = ref.describe()
        if self.reader is None:
            return ProbeResult.unavailable(
                METRICS_UNAVAILABLE, f"{where}: no metrics source configured in this process"
            )
        start = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
                replicas = await self.reader(ref, namespace)
        except TimeoutError:
            return ProbeResult.unavailable(
                METRICS_UNAVAILABLE, f"{where}: no usage within {timeout_s:g}s", _ms(start)
            )
        except TargetNotFound as exc:
            return ProbeResult.unavailable(TARGET_NOT_FOUND, str(exc), _ms(start))
        except MissingBasis as exc:
            reason = MISSING_LIMITS if ref.is_compose else MISSING_REQUESTS
            return ProbeResult.unavailable(reason, str(exc), _ms(start))
        except (LookupError, OSError, ApiError, DockerException) as exc:
            # metrics.k8s.io not served, the apiserver or Docker Engine unreachable, no access.
            return ProbeResult.unavailable(
                METRICS_UNAVAILABLE, f"{where}: {describe_error(exc)}", _ms(start)
            )
        if not replicas:
            return ProbeResult.unavailable(
                NO_METRICS,
                f"{where}: no running replica reported usage (none running, or just started)",
                _ms(start),
            )
        return ProbeResult(latency_ms=_ms(start), replicas=tuple(replicas))


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
