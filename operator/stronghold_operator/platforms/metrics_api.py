"""Pod usage from the resource metrics API (metrics.k8s.io/v1beta1), read generically.

The Kubernetes clients have no classes for metrics.k8s.io: PodMetrics are read as JSON
(``Kube.list`` sends them through the metrics API's own client, timeout and limit).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from stronghold_operator.conditions import parse_rfc3339

# Defined with the scaling model, so services catch it without importing a platform.
from stronghold_operator.models.scaling import MetricsUnavailableError
from stronghold_operator.platforms.kube import (
    POD_METRICS,
    ApiError,
    ApiUnreachable,
    Kube,
    label_selector,
)
from stronghold_operator.platforms.quantity import parse_quantity

GROUP = "metrics.k8s.io"
VERSION = "v1beta1"


def _timestamp(value: Any) -> datetime:
    return parse_rfc3339(value) or datetime.fromtimestamp(0, UTC)


def parse_pod_metrics(item: Mapping[str, Any]) -> tuple[float, float, datetime]:
    """(CPU cores, memory bytes, timestamp) summed over a PodMetrics item's containers."""
    cpu = 0.0
    mem = 0.0
    for c in item.get("containers") or []:
        usage = c.get("usage") or {}
        cpu += parse_quantity(usage.get("cpu", "0"))
        mem += parse_quantity(usage.get("memory", "0"))
    return cpu, mem, _timestamp(item.get("timestamp"))


async def pod_metrics(
    kube: Kube, namespace: str, selector: Mapping[str, Any]
) -> dict[str, tuple[float, float, datetime]]:
    """pod name -> (CPU cores, memory bytes, timestamp) for pods matching ``selector`` (a
    LabelSelector; ``{}`` matches every pod)."""
    try:
        items = await kube.list(POD_METRICS, namespace, labels=label_selector(selector))
    except ApiError as exc:
        # 404: the API is not registered; 503: registered but its server does not answer.
        raise MetricsUnavailableError(
            f"{GROUP}/{VERSION} answered {exc.status} {exc.reason}".strip()
        ) from None
    except ApiUnreachable as exc:  # a hung aggregated API server: its own 5 s timeout
        raise MetricsUnavailableError(f"{GROUP}/{VERSION} did not answer: {exc}") from None
    return {i["metadata"]["name"]: parse_pod_metrics(i) for i in items}
