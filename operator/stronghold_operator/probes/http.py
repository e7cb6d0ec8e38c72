"""HTTP probes: one shared client (connection reuse), safe targets, results as data.

Safety: the client (:mod:`stronghold_operator.platforms.http`) never reads the environment
(no proxies, no .netrc credentials) and passes every request, including every redirect hop,
through the outbound guard (resolve once, judge every address, connect to the judged one);
probes never send an Authorization header or the ServiceAccount token. A health document's
values are judged against the configured words and only those words (or "unexpected value")
are reported: nothing a target sends is copied into status verbatim.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urljoin, urlsplit

from stronghold_operator.models.health import HttpCheck
from stronghold_operator.platforms.http import (
    USER_AGENT,
    HttpClient,
    HttpError,
    HttpRefused,
    HttpTimeout,
    Response,
)
from stronghold_operator.probes.base import ProbeResult, UrlResult

__all__ = ["USER_AGENT", "HttpProbe", "Limiter", "lookup"]
MAX_BODY = 1 << 20  # a health document larger than 1 MiB is not a health document
MAX_REDIRECTS = 5
UNEXPECTED = "unexpected value"  # what status shows of a value that is not a configured word
# Well-known words for "not healthy": status may name them (they are ours, not fetched text).
UNHEALTHY_WORDS = (
    "down", "unhealthy", "disconnected", "degraded", "error", "fail", "failed", "failing",
    "unavailable", "critical", "warn", "warning", "red", "yellow", "timeout", "unknown",
)  # fmt: skip


class Limiter:
    """One asyncio.Semaphore per target (host:port): a target is never flooded."""

    def __init__(self, per_target: int) -> None:
        self.per_target = per_target
        self._sems: dict[str, asyncio.Semaphore] = {}

    def __call__(self, target: str) -> asyncio.Semaphore:
        sem = self._sems.get(target)
        if sem is None:
            sem = self._sems[target] = asyncio.Semaphore(self.per_target)
        return sem


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def lookup(document: Any, path: str) -> Any:
    """A dotted path into a JSON document (``checks.database.status``; list indexes too)."""
    node = document
    for part in path.split("."):
        if isinstance(node, Mapping):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _word(value: Any, allowed: Sequence[str]) -> str | None:
    """The configured (or well-known unhealthy) word ``value`` equals, case-insensitively,
    or :data:`UNEXPECTED`.

    Booleans become our own words ok/down; anything else a target sends (a token at
    ``statusPath: access_token``, an error page) never reaches status or Events.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return "ok" if value else "down"
    if isinstance(value, dict | list):
        return UNEXPECTED
    text = str(value).lower()
    return next((w for w in (*allowed, *UNHEALTHY_WORDS) if w.lower() == text), UNEXPECTED)


class HttpProbe:
    """Probes the URLs of an :class:`HttpCheck`; one instance per operator process."""

    def __init__(self, client: HttpClient | None = None, per_target: int = 10) -> None:
        self.client = client or HttpClient()
        self.limit = Limiter(per_target)
        self._not_before: dict[str, float] = {}  # url -> monotonic time Retry-After allows

    async def close(self) -> None:
        await self.client.close()

    async def probe(
        self, spec: HttpCheck, *, timeout_s: float, secrets: Mapping[str, str]
    ) -> ProbeResult:
        del secrets  # HTTP checks carry no credentials
        results = await asyncio.gather(*(self._one(spec, u, timeout_s) for u in spec.targets))
        answered = [r.latency_ms for r in results if r.latency_ms is not None]
        return ProbeResult(
            latency_ms=max(answered) if answered else None,
            urls=tuple(results),
            retry_after_s=max((r.retry_after_s or 0 for r in results), default=0) or None,
        )

    async def _one(self, spec: HttpCheck, url: str, timeout_s: float) -> UrlResult:
        now = time.monotonic()
        wait = self._not_before.get(url, 0.0) - now
        if wait > 0:
            # Honour Retry-After: asking again early would only be refused again.
            return UrlResult(
                url, None, None, "RateLimited", "honouring Retry-After", retry_after_s=wait
            )
        parts = urlsplit(url)
        target = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
        try:
            async with asyncio.timeout(timeout_s), self.limit(target):
                return await self._fetch(spec, url, timeout_s)
        except TimeoutError:
            return UrlResult(url, None, None, "Timeout", f"no answer within {timeout_s:g}s")

    async def _fetch(self, spec: HttpCheck, url: str, timeout_s: float) -> UrlResult:
        current = url
        start = time.perf_counter()
        for _ in range(MAX_REDIRECTS + 1):
            # Every hop passes the guard (as written here, its addresses in the client).
            why = self.client.refusal(current)
            if why:
                return UrlResult(url, None, None, "Refused", f"refused: {why}")
            try:
                response = await self._request(spec, current, timeout_s)
            except HttpRefused as exc:
                return UrlResult(url, None, None, "Refused", f"refused: {exc}"[:300])
            except HttpTimeout:
                return UrlResult(url, None, None, "Timeout", f"no answer within {timeout_s:g}s")
            except HttpError as exc:
                return UrlResult(url, None, None, "Unreachable", str(exc)[:300])
            status, headers = response.status, response.headers
            location = headers.get("location")
            if spec.follow_redirects and status in (301, 302, 303, 307, 308) and location:
                current = urljoin(current, location)
                continue
            latency = (time.perf_counter() - start) * 1000.0
            return self._result(spec, url, status, headers, response.body, latency)
        return UrlResult(url, None, None, "Unreachable", f"more than {MAX_REDIRECTS} redirects")

    async def _request(self, spec: HttpCheck, url: str, timeout_s: float) -> Response:
        headers = dict(spec.headers)
        if spec.health_document is not None:
            headers.setdefault("Accept", "application/json")
        return await self.client.request(
            spec.method, url, headers=headers, timeout_s=timeout_s, max_body=MAX_BODY
        )

    def _result(
        self,
        spec: HttpCheck,
        url: str,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
        latency: float,
    ) -> UrlResult:
        if status == 429:
            after = _retry_after(headers.get("retry-after"), time.time())
            if after:
                self._not_before[url] = time.monotonic() + min(after, 3600.0)
            return UrlResult(
                url,
                status,
                latency,
                "RateLimited",
                "429 Too Many Requests",
                retry_after_s=after,
            )
        self._not_before.pop(url, None)
        doc = spec.health_document
        if doc is None:
            return UrlResult(url, status, latency)
        try:
            parsed = json.loads(body) if body else None
        except (ValueError, UnicodeDecodeError):
            parsed = None  # an HTML error page is a result, not a crash
        if not isinstance(parsed, dict):
            return UrlResult(url, status, latency, message="not a JSON health document")
        components: dict[str, str | None] = {}
        for comp in doc.components:
            value = lookup(parsed, comp.path)
            # A component the document does not mention is not judged (applications differ).
            if value is not None:
                components[comp.name] = _word(value, doc.component_healthy_values)
        return UrlResult(
            url,
            status,
            latency,
            document_status=_word(lookup(parsed, doc.status_path), doc.healthy_values),
            components=components,
        )
