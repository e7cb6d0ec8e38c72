"""RabbitMQ probes: per-queue depth and consumers by AMQP passive declare (pika, in a thread),
plus every queue with unacknowledged counts from the management API when configured.

pika's BlockingConnection is not asyncio-aware, so it runs in a small dedicated thread pool
(never the default executor the Kubernetes client uses); one connection per broker URL is
kept and reused, one probe at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pika
import pika.exceptions

from stronghold_operator.models.health import RabbitmqCheck, forbidden_host
from stronghold_operator.platforms.http import USER_AGENT, HttpClient, HttpError
from stronghold_operator.probes.base import ProbeResult, QueueStats

_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="amqp-probe")
# pika logs every connection and channel open and close at INFO: with a thousand policies
# that was most of the operator's log and a good share of its CPU.
logging.getLogger("pika").setLevel(logging.WARNING)


@dataclass
class _Broker:
    lock: threading.Lock = field(default_factory=threading.Lock)
    conn: Any = None  # pika.BlockingConnection
    channel: Any = None  # kept between probes: one round trip per queue instead of three

    def drop(self) -> None:
        conn, self.conn, self.channel = self.conn, None, None
        if conn is not None:
            # Closing an already broken connection may raise anything.
            with contextlib.suppress(Exception):
                conn.close()


class AmqpUnreachable(Exception):
    """The broker did not accept a connection."""


def _params(url: str, timeout_s: float) -> pika.URLParameters:
    params = pika.URLParameters(url)
    params.socket_timeout = timeout_s
    params.stack_timeout = timeout_s
    params.blocked_connection_timeout = timeout_s
    params.connection_attempts = 1
    params.retry_delay = 0
    params.heartbeat = 0  # an idle kept connection must not be closed for missed heartbeats
    params.client_properties = {"connection_name": USER_AGENT}
    return params


def _passive(broker: _Broker, url: str, queues: list[str], timeout_s: float) -> list[QueueStats]:
    """Blocking part (runs in the AMQP pool)."""
    with broker.lock:
        for attempt in (1, 2):
            if broker.conn is None or not broker.conn.is_open:
                broker.channel = None
                try:
                    broker.conn = pika.BlockingConnection(_params(url, timeout_s))
                except (pika.exceptions.AMQPError, OSError) as exc:
                    broker.conn = None
                    raise AmqpUnreachable(_describe(exc)) from None
            try:
                return _declare_all(broker, queues)
            except (pika.exceptions.AMQPConnectionError, pika.exceptions.StreamLostError, OSError):
                broker.drop()  # a kept connection the broker closed: reconnect once
                if attempt == 2:
                    raise
        return []  # pragma: no cover


def _declare_all(broker: _Broker, queues: list[str]) -> list[QueueStats]:
    out: list[QueueStats] = []
    for name in queues:
        if broker.channel is None or not broker.channel.is_open:
            broker.channel = broker.conn.channel()
        try:
            ok = broker.channel.queue_declare(queue=name, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            broker.channel = None  # the broker closed it (a 404 does): open another next time
            if exc.reply_code != 404:
                raise
            out.append(QueueStats(name, None, None))
            continue
        out.append(QueueStats(name, ok.method.message_count, ok.method.consumer_count))
    return out


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


class RabbitmqProbe:
    """Probes :class:`RabbitmqCheck` targets; one instance per operator process."""

    def __init__(self, client: HttpClient | None = None) -> None:
        self._owns_client = client is None
        self.client = client or HttpClient()
        self._brokers: dict[str, _Broker] = {}

    async def close(self) -> None:
        for b in self._brokers.values():
            await asyncio.get_running_loop().run_in_executor(_POOL, b.drop)
        self._brokers.clear()
        if self._owns_client:
            await self.client.close()

    async def probe(
        self, spec: RabbitmqCheck, *, timeout_s: float, secrets: Mapping[str, str]
    ) -> ProbeResult:
        url = secrets.get("url", "")
        host = urlsplit(url).hostname or ""
        where = f"{host}:{urlsplit(url).port or 5672}" if host else "broker"
        if not url.startswith(("amqp://", "amqps://")) or not host:
            return ProbeResult.failed("Error", "the AMQP URL in the Secret is not amqp(s)://")
        why = forbidden_host(host)
        if why:
            return ProbeResult.failed("Refused", f"refused: {why}")
        key = hashlib.sha256(url.encode()).hexdigest()
        broker = self._brokers.setdefault(key, _Broker())
        start = time.perf_counter()
        loop = asyncio.get_running_loop()
        names = [q.name for q in spec.queues]
        try:
            async with asyncio.timeout(timeout_s):
                queues = await loop.run_in_executor(_POOL, _passive, broker, url, names, timeout_s)
                latency = (time.perf_counter() - start) * 1000.0
                if spec.management is not None:
                    queues = await self._management(spec, secrets, queues, timeout_s)
        except TimeoutError:
            return ProbeResult.failed("Timeout", f"{where}: no answer within {timeout_s:g}s")
        except AmqpUnreachable as exc:
            return ProbeResult.failed("Unreachable", f"{where}: {exc}", _ms(start))
        except (pika.exceptions.AMQPError, OSError) as exc:
            return ProbeResult.failed("Unreachable", f"{where}: {_describe(exc)}", _ms(start))
        except HttpError as exc:
            return ProbeResult.failed(
                "Unreachable", f"management API: {_describe(exc)}", _ms(start)
            )
        return ProbeResult(latency_ms=latency, queues=tuple(queues))

    async def _management(
        self,
        spec: RabbitmqCheck,
        secrets: Mapping[str, str],
        amqp: list[QueueStats],
        timeout_s: float,
    ) -> list[QueueStats]:
        assert spec.management is not None
        vhost = unquote(urlsplit(secrets.get("url", "")).path[1:]) or "/"
        base = spec.management.url.rstrip("/")
        response = await self.client.request(
            "GET",
            f"{base}/api/queues/{quote(vhost, safe='')}",
            basic_auth=(spec.management.username, secrets.get("management-password", "")),
            timeout_s=timeout_s,
            params={"columns": "name,messages_ready,messages_unacknowledged,consumers"},
            max_body=64 << 20,
        )
        if response.status != 200:
            raise HttpError(f"HTTP {response.status}")
        try:
            items = response.json()
        except ValueError as exc:
            raise HttpError("not a JSON answer") from exc
        by_name = {q.name: q for q in amqp}
        for item in items:
            name = str(item.get("name", ""))
            ready = item.get("messages_ready")
            listed = by_name.get(name)
            by_name[name] = QueueStats(
                name,
                int(ready) if ready is not None else (listed.messages if listed else 0),
                int(item.get("consumers", 0) or 0),
                int(item.get("messages_unacknowledged", 0) or 0),
            )
        return list(by_name.values())


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
