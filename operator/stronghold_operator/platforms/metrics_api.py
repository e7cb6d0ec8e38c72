"""Pod usage from the resource metrics API (metrics.k8s.io/v1beta1), read generically.

The Python client has no classes for metrics.k8s.io, so the generic (custom-objects) API
reads it as JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity

from stronghold_operator.conditions import parse_rfc3339

# Defined with the scaling model, so services catch it without importing a platform.
from stronghold_operator.models.scaling import MetricsUnavailableError
from stronghold_operator.platforms import executors
from stronghold_operator.platforms.kube import Kube, call_json

GROUP = "metrics.k8s.io"
VERSION = "v1beta1"
# (connect, read) seconds: metrics-server answers in milliseconds or is in trouble (the
# client retries a read timeout up to three times).
REQUEST_TIMEOUT = (5.0, 5.0)


def _timestamp(value: Any) -> datetime:
    return parse_rfc3339(value) or datetime.fromtimestamp(0, UTC)


def parse_pod_metrics(item: Mapping[str, Any]) -> tuple[float, float, datetime]:
    """(CPU cores, memory bytes, timestamp) summed over a PodMetrics item's containers."""
    cpu = 0.0
    mem = 0.0
    for c in item.get("containers") or []:
        usage = c.get("usage") or {}
        cpu += float(parse_quantity(usage.get("cpu", "0")))  # type: ignore[no-untyped-call]
        mem += float(parse_quantity(usage.get("memory", "0")))  # type: ignore[no-untyped-call]
    return cpu, mem, _timestamp(item.get("timestamp"))


async def pod_metrics(
    kube: Kube, namespace: str, selector: str
) -> dict[str, tuple[float, float, datetime]]:
    """pod name -> (CPU cores, memory bytes, timestamp) for pods matching ``selector``."""
    try:
        body = await call_json(
            kube.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            "pods",
            label_selector=selector or None,
            # Its own threads: a hung metrics API must not hold the Kubernetes calls' ones.
            pool=executors.METRICS,
            _request_timeout=REQUEST_TIMEOUT,
        )
    except ApiException as exc:
        # 404: the API is not registered; 503: registered but its server does not answer.
        raise MetricsUnavailableError(
            f"{GROUP}/{VERSION} answered {exc.status} {exc.reason}".strip()
        ) from None
    return {i["metadata"]["name"]: parse_pod_metrics(i) for i in body.get("items", [])}
