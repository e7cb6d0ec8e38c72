"""RabbitMQ probes: per-queue depth and consumers by AMQP passive declare (pika's asyncio
adapter, in the event loop), plus every queue with unacknowledged counts from the management
API when configured. One connection and channel per broker URL are kept and reused, one
declare at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pika
import pika.exceptions
from pika.adapters.asyncio_connection import AsyncioConnection

from stronghold_operator.models.health import RabbitmqCheck, forbidden_host
from stronghold_operator.platforms.http import USER_AGENT, HttpClient, HttpError, HttpRefused
from stronghold_operator.probes.base import ProbeResult, QueueStats

# pika logs every connection and channel open and close at INFO: with a thousand policies
# that was most of the operator's log and a good share of its CPU.
logging.getLogger("pika").setLevel(logging.WARNING)


class AmqpUnreachable(Exception):
    """The broker did not accept a connection, or dropped it."""


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


@dataclass
class _Broker:
    """One kept connection and channel per broker, on pika's asyncio adapter.

    In the event loop rather than a BlockingConnection in worker threads: a passive
    queue_declare is then one round trip with no thread hop (threads also cost memory).
    One declare at a time: a 404 closes the channel under every declare in flight.
    """

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    conn: AsyncioConnection | None = None
    channel: Any = None  # kept between probes: one round trip per queue instead of three
    # Fails whatever waits on this connection or channel when the broker closes it.
    waiter: asyncio.Future[Any] | None = None

    def drop(self) -> None:
        conn, self.conn, self.channel = self.conn, None, None
        if conn is not None and not (conn.is_closed or conn.is_closing):
            with contextlib.suppress(Exception):  # closing a broken connection may raise
                conn.close()

    def _fail(self, exc: BaseException) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    async def _wait(self, fut: asyncio.Future[Any]) -> Any:
        self.waiter = fut
        try:
            return await fut
        finally:
            self.waiter = None

    async def connect(self, url: str, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()

        def opened(conn: Any) -> None:
            if not fut.done():
                fut.set_result(conn)

        def failed(_conn: Any, err: BaseException | str) -> None:
            self._fail(AmqpUnreachable(_describe(err) if isinstance(err, BaseException) else err))

        def closed(_conn: Any, reason: BaseException) -> None:
            self.conn, self.channel = None, None
            self._fail(AmqpUnreachable(f"connection closed: {_describe(reason)}"))

        self.conn = AsyncioConnection(
            _params(url, timeout_s),
            on_open_callback=opened,
            on_open_error_callback=failed,
            on_close_callback=closed,
            custom_ioloop=loop,
        )
        try:
            await self._wait(fut)
        except BaseException:
            self.drop()
            raise

    async def open_channel(self) -> None:
        assert self.conn is not None
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def closed(channel: Any, reason: BaseException) -> None:
            if self.channel is channel:
                self.channel = None
            self._fail(reason)

        def opened(channel: Any) -> None:
            channel.add_on_close_callback(closed)
            if not fut.done():
                fut.set_result(channel)

        self.conn.channel(on_open_callback=opened)
        self.channel = await self._wait(fut)

    async def declare(self, name: str) -> QueueStats:
        """Passive declare; a queue that does not exist is data (None counts)."""
        if self.channel is None or not self.channel.is_open:
            await self.open_channel()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def answered(frame: Any) -> None:
            if not fut.done():
                fut.set_result(frame)

        self.channel.queue_declare(queue=name, passive=True, callback=answered)
        try:
            frame = await self._wait(fut)
        except pika.exceptions.ChannelClosedByBroker as exc:
            self.channel = None  # the broker closed it (a 404 does): open another next time
            if exc.reply_code != 404:
                raise
            return QueueStats(name, None, None)
        return QueueStats(name, frame.method.message_count, frame.method.consumer_count)

    async def passive(self, url: str, queues: list[str], timeout_s: float) -> list[QueueStats]:
        async with self.lock:
            for attempt in (1, 2):
                if self.conn is None or not self.conn.is_open:
                    self.channel = None
                    await self.connect(url, timeout_s)
                try:
                    return [await self.declare(name) for name in queues]
                except (AmqpUnreachable, pika.exceptions.AMQPConnectionError):
                    self.drop()  # a kept connection the broker closed: reconnect once
                    if attempt == 2:
                        raise
            return []  # pragma: no cover


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
            b.drop()
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
        names = [q.name for q in spec.queues]
        try:
            async with asyncio.timeout(timeout_s):
                queues = await broker.passive(url, names, timeout_s)
                latency = (time.perf_counter() - start) * 1000.0
                if spec.management is not None:
                    queues = await self._management(spec, secrets, queues, timeout_s)
        except TimeoutError:
            return ProbeResult.failed("Timeout", f"{where}: no answer within {timeout_s:g}s")
        except AmqpUnreachable as exc:
            return ProbeResult.failed("Unreachable", f"{where}: {exc}", _ms(start))
        except (pika.exceptions.AMQPError, OSError) as exc:
            return ProbeResult.failed("Unreachable", f"{where}: {_describe(exc)}", _ms(start))
        except HttpRefused as exc:  # the outbound guard: nothing was sent
            return ProbeResult.failed("Refused", f"management API refused: {exc}"[:300])
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
