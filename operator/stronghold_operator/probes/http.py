"""HTTP probes: one shared client (connection reuse), safe targets, results as data.

Safety: the client (:mod:`stronghold_operator.platforms.http`) never reads the environment
(no proxies, no .netrc credentials); probes never send an Authorization header or the
ServiceAccount token, and refuse link-local and cloud metadata addresses, both as written
and after DNS resolution (also on every redirect hop).
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import json
import socket
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

from stronghold_operator.models.health import HttpCheck, forbidden_host
from stronghold_operator.platforms.http import (
    USER_AGENT,
    HttpClient,
    HttpError,
    HttpTimeout,
    Response,
)
from stronghold_operator.probes.base import ProbeResult, UrlResult

__all__ = ["USER_AGENT", "HttpProbe", "Limiter", "lookup"]
MAX_BODY = 1 << 20  # a health document larger than 1 MiB is not a health document
MAX_REDIRECTS = 5
DNS_TTL = 30.0


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


def _word(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "ok" if value else "down"
    return str(value)


class HttpProbe:
    """Probes the URLs of an :class:`HttpCheck`; one instance per operator process."""

    def __init__(self, client: HttpClient | None = None, per_target: int = 10) -> None:
        self.client = client or HttpClient()
        self.limit = Limiter(per_target)
        self._not_before: dict[str, float] = {}  # url -> monotonic time Retry-After allows
        self._dns: dict[tuple[str, int], tuple[float, str | None]] = {}

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

    async def _refused(self, url: str) -> str | None:
        """Why ``url`` must not be fetched (its host, or any address it resolves to)."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        why = forbidden_host(host)
        if why:
            return why
        port = parts.port or (443 if parts.scheme == "https" else 80)
        key = (host, port)
        cached = self._dns.get(key)
        now = time.monotonic()
        if cached and cached[0] > now:
            return cached[1]
        try:
            ipaddress.ip_address(host.strip("[]"))
            verdict: str | None = None  # a literal address was checked above
        except ValueError:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, port, type=socket.SOCK_STREAM
                )
            except OSError:
                return None  # the request itself will report the DNS failure
            verdict = None
            for info in infos:
                why = forbidden_host(str(info[4][0]))
                if why:
                    verdict = f"{host} resolves to a forbidden address ({why})"
                    break
        self._dns[key] = (now + DNS_TTL, verdict)
        return verdict

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
            why = await self._refused(current)
            if why:
                return UrlResult(url, None, None, "Refused", f"refused: {why}")
            try:
                response = await self._request(spec, current, timeout_s)
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
                components[comp.name] = _word(value)
        return UrlResult(
            url,
            status,
            latency,
            document_status=_word(lookup(parsed, doc.status_path)),
            components=components,
        )
