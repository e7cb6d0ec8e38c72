"""A thin typed client of Prometheus's HTTP API: instant and range queries.

For the CLI (``stronghold capacity report``), run by a person or a CronJob against the
Prometheus they name; not the operator's guarded probe client (platforms/http.py), whose
outbound policy exists to keep policy authors away from internal addresses.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

MAX_BODY = 64 << 20  # a 30-day range of a few hundred series at a 1 h step is well below


class PrometheusError(Exception):
    """No usable answer: unreachable, HTTP error, or a query Prometheus refused."""


@dataclass(frozen=True)
class RangeSeries:
    labels: Mapping[str, str]
    times: tuple[float, ...]
    values: tuple[float, ...]


@dataclass(frozen=True)
class Sample:
    labels: Mapping[str, str]
    value: float


def _labels(item: Mapping[str, Any]) -> dict[str, str]:
    # The metric name is the query's business; the report names series by resource.
    return {str(k): str(v) for k, v in (item.get("metric") or {}).items() if k != "__name__"}


def parse_matrix(data: Mapping[str, Any]) -> list[RangeSeries]:
    """The ``data`` of /api/v1/query_range (NaN and infinite samples dropped)."""
    if data.get("resultType") != "matrix":
        raise PrometheusError(f"expected a matrix, got {data.get('resultType')!r}")
    out = []
    for item in data.get("result") or []:
        points = [(float(t), float(v)) for t, v in item.get("values") or []]
        points = [(t, v) for t, v in points if math.isfinite(v)]
        out.append(
            RangeSeries(_labels(item), tuple(t for t, _ in points), tuple(v for _, v in points))
        )
    return out


def parse_vector(data: Mapping[str, Any]) -> list[Sample]:
    """The ``data`` of /api/v1/query: a vector or a scalar (NaN dropped)."""
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar" and isinstance(result, list):
        samples = [Sample({}, float(result[1]))]
    elif kind == "vector" and isinstance(result, list):
        samples = [Sample(_labels(i), float(i["value"][1])) for i in result]
    else:
        raise PrometheusError(f"expected a vector or scalar, got {kind!r}")
    return [s for s in samples if math.isfinite(s.value)]


class Prometheus:
    """``async with Prometheus(url) as prom: await prom.query_range(...)``."""

    def __init__(
        self, url: str, *, timeout_s: float = 30.0, headers: Mapping[str, str] | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._headers = dict(headers or {})
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Prometheus:
        # trust_env=False: no proxy or .netrc surprises; the URL says where to go.
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_s), headers=self._headers
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def _get(self, path: str, params: Mapping[str, str]) -> Mapping[str, Any]:
        if self._session is None:
            raise RuntimeError("use 'async with Prometheus(...)'")
        try:
            async with self._session.post(f"{self.url}{path}", data=dict(params)) as resp:
                status, chunks, size = resp.status, [], 0
                async for chunk in resp.content.iter_chunked(1 << 16):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > MAX_BODY:
                        break
                body = b"".join(chunks)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PrometheusError(f"{self.url}: {type(exc).__name__}: {exc}") from None
        if len(body) > MAX_BODY:
            raise PrometheusError(f"{path}: answer larger than {MAX_BODY} bytes (raise --step)")
        try:
            doc = json.loads(body)
        except ValueError:
            raise PrometheusError(
                f"{self.url}{path}: HTTP {status}, not a Prometheus answer"
            ) from None
        if not isinstance(doc, dict) or doc.get("status") != "success":
            doc = doc if isinstance(doc, dict) else {}
            raise PrometheusError(
                f"HTTP {status} {doc.get('errorType', 'error')}: {doc.get('error', '')}"[:500]
            )
        data = doc.get("data")
        if not isinstance(data, dict):
            raise PrometheusError(f"{path}: answer without data")
        return data

    async def query(self, promql: str, at: float) -> list[Sample]:
        """An instant query at ``at`` (epoch seconds)."""
        data = await self._get("/api/v1/query", {"query": promql, "time": f"{at:.3f}"})
        return parse_vector(data)

    async def query_range(
        self, promql: str, start: float, end: float, step_s: float
    ) -> list[RangeSeries]:
        """A range query; ``step_s`` seconds between points."""
        params = {
            "query": promql,
            "start": f"{start:.3f}",
            "end": f"{end:.3f}",
            "step": f"{max(step_s, 1.0):g}",
        }
        return parse_matrix(await self._get("/api/v1/query_range", params))
