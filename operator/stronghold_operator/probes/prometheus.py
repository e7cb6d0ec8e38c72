"""Prometheus probes: one PromQL instant query over the shared HTTP client.

For what the guide watches that lives in metrics (disk usage, error rate, ...). The query
runs with the HTTP probe's client, per-target cap and outbound guard (platforms/http.py).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from stronghold_operator.models.health import PrometheusCheck
from stronghold_operator.platforms.http import HttpError, HttpRefused, HttpTimeout
from stronghold_operator.probes.base import ProbeResult, Series
from stronghold_operator.probes.http import HttpProbe

MAX_SERIES = 100


def parse_result(data: Mapping[str, Any]) -> tuple[Series, ...]:
    """The ``data`` of /api/v1/query: vector or scalar (NaN samples are dropped)."""
    kind = data.get("resultType")
    result = data.get("result")
    out: list[Series] = []
    if kind == "scalar" and isinstance(result, list) and len(result) == 2:
        out.append(Series({}, float(result[1])))
    elif kind == "vector" and isinstance(result, list):
        for item in result[:MAX_SERIES]:
            labels = {str(k): str(v) for k, v in (item.get("metric") or {}).items()}
            out.append(Series(labels, float(item["value"][1])))
    return tuple(s for s in out if not math.isnan(s.value))


class PrometheusProbe:
    """Probes :class:`PrometheusCheck` targets through an :class:`HttpProbe`'s client."""

    def __init__(self, http: HttpProbe) -> None:
        self.http = http

    async def probe(
        self, spec: PrometheusCheck, *, timeout_s: float, secrets: Mapping[str, str]
    ) -> ProbeResult:
        del secrets
        base = spec.url.rstrip("/")
        why = self.http.client.refusal(base)
        if why:
            return ProbeResult.failed("Refused", f"refused: {why}")
        parts = urlsplit(base)
        target = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
        start = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s), self.http.limit(target):
                response = await self.http.client.request(
                    "GET",
                    f"{base}/api/v1/query",
                    params={"query": spec.query, "timeout": f"{max(1, int(timeout_s))}s"},
                    timeout_s=timeout_s,
                )
        except (TimeoutError, HttpTimeout):
            return ProbeResult.failed("Timeout", f"no answer within {timeout_s:g}s")
        except HttpRefused as exc:  # a name that resolved to a forbidden address
            return ProbeResult.failed("Refused", f"refused: {exc}"[:300])
        except HttpError as exc:
            return ProbeResult.failed("Unreachable", f"{base}: {exc}"[:300])
        latency = (time.perf_counter() - start) * 1000.0
        try:
            body = response.json()
        except ValueError:
            return ProbeResult.failed(
                "Error", f"{base}: HTTP {response.status}, not a Prometheus answer", latency
            )
        if response.status != 200 or not isinstance(body, dict) or body.get("status") != "success":
            body = body if isinstance(body, dict) else {}
            error = f"{body.get('errorType', 'error')}: {body.get('error', '')}".strip()
            return ProbeResult.failed(
                "Error", f"query failed (HTTP {response.status}) {error}"[:300], latency
            )
        try:
            series = parse_result(body.get("data") or {})
        except (KeyError, TypeError, ValueError, IndexError):
            return ProbeResult.failed("Error", "unexpected query result shape", latency)
        return ProbeResult(latency_ms=latency, series=series)
