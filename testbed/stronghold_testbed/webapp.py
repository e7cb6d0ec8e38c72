"""A small web app implementing the operations guide's health endpoints (the demo web tier).

Run: ``python -m stronghold_testbed.webapp --port 8000 --pg-dsn "host=127.0.0.1
user=postgres dbname=postgres" --memcached 127.0.0.1:11211 --amqp amqp://guest:guest@127.0.0.1/``

Endpoints: ``/`` ``/admin/`` ``/api/`` (pages the guide times), ``/health/`` (the guide's JSON:
status, database, cache, queue, timestamp; 503 when a component is down), ``/health/db/``
``/health/cache/`` ``/health/queue/``, and for tests ``/slow?ms=N``, ``/hang``,
``/status?code=N[&retry_after=S]`` (an HTML error page, as real servers send).

Standard library server; each component check is a real round trip to the service.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

# Imported at start-up, not on the first request: inside the operator package they came
# preloaded with it, and a first /health/ that pays ~0.5 s of imports reads as a slow app.
import pika
import psycopg
from pymemcache.client.base import Client

CHECK_TIMEOUT = 2.0


def check_database(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=int(CHECK_TIMEOUT)) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def check_cache(address: str) -> bool:
    host, _, port = address.rpartition(":")
    client = Client((host, int(port)), connect_timeout=CHECK_TIMEOUT, timeout=CHECK_TIMEOUT)
    try:
        client.set("stronghold-webapp-health", b"1", expire=60)
        return bool(client.get("stronghold-webapp-health") == b"1")
    except Exception:  # pymemcache raises its own errors as well as socket errors
        return False
    finally:
        client.close()


def check_queue(url: str) -> bool:
    params = pika.URLParameters(url)
    params.socket_timeout = CHECK_TIMEOUT
    params.blocked_connection_timeout = CHECK_TIMEOUT
    params.connection_attempts = 1
    try:
        conn = pika.BlockingConnection(params)
    except Exception:  # pika raises many AMQP and socket error types
        return False
    try:
        return bool(conn.is_open)
    finally:
        conn.close()


class App:
    """The app's configuration and component checks."""

    def __init__(self, pg_dsn: str | None, memcached: str | None, amqp: str | None) -> None:
        self.checks: dict[str, Callable[[], bool]] = {}
        if pg_dsn:
            self.checks["database"] = lambda: check_database(pg_dsn)
        if memcached:
            self.checks["cache"] = lambda: check_cache(memcached)
        if amqp:
            self.checks["queue"] = lambda: check_queue(amqp)
        self.stop = threading.Event()

    def health(self, only: str | None = None) -> tuple[int, dict[str, Any]]:
        names = [only] if only else list(self.checks)
        doc: dict[str, Any] = {}
        ok = True
        for name in names:
            up = self.checks[name]()
            ok = ok and up
            doc[name] = "connected" if up else "disconnected"
        doc = {"status": "healthy" if ok else "unhealthy", **doc}
        doc["timestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return (200 if ok else 503), doc


_COMPONENT_PATHS = {"/health/db/": "database", "/health/cache/": "cache", "/health/queue/": "queue"}


class Handler(BaseHTTPRequestHandler):
    server_version = "StrongholdWebapp/0.1"
    # Keep-alive, as nginx in front of the guide's Django serves by default (every response
    # has a Content-Length); HTTP/1.0 closed the connection after each answer.
    protocol_version = "HTTP/1.1"
    app: App
    quiet = True

    def log_message(self, format: str, *args: Any) -> None:
        if not self.quiet:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

    def _send(
        self, code: int, body: bytes, ctype: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, doc: Any) -> None:
        self._send(code, json.dumps(doc).encode(), "application/json")

    def _html(self, code: int, title: str, headers: dict[str, str] | None = None) -> None:
        page = f"<!doctype html><html><head><title>{title}</title></head>"
        page += f"<body><h1>{title}</h1></body></html>"
        self._send(code, page.encode(), "text/html; charset=utf-8", headers)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_POST(self) -> None:
        # Read the body: on a kept-alive connection it would otherwise be the next request.
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.do_GET()

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        path = parts.path
        if path in ("/health", "/health/"):
            self._json(*self.app.health())
        elif path in _COMPONENT_PATHS and _COMPONENT_PATHS[path] in self.app.checks:
            self._json(*self.app.health(_COMPONENT_PATHS[path]))
        elif path == "/":
            self._html(200, "Financial Stronghold")
        elif path == "/admin/":
            self._html(200, "Financial Stronghold administration")
        elif path == "/api/":
            self._json(200, {"name": "financial-stronghold", "version": "1"})
        elif path == "/slow":
            ms = float(query.get("ms", ["1000"])[0])
            time.sleep(min(ms, 60_000) / 1000.0)
            self._json(200, {"status": "healthy", "sleptMs": ms})
        elif path == "/hang":
            # Never answers (until the server stops): for probe timeouts.
            self.app.stop.wait()
        elif path == "/status":
            code = int(query.get("code", ["500"])[0])
            extra = {}
            if "retry_after" in query:
                extra["Retry-After"] = query["retry_after"][0]
            self._html(code, f"Error {code}", extra)
        else:
            self._html(404, "Not Found")


def make_server(
    port: int,
    host: str = "127.0.0.1",
    pg_dsn: str | None = None,
    memcached: str | None = None,
    amqp: str | None = None,
    quiet: bool = True,
) -> ThreadingHTTPServer:
    app = App(pg_dsn, memcached, amqp)
    handler = type("BoundHandler", (Handler,), {"app": app, "quiet": quiet})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--pg-dsn", default=None, help="libpq connection string of the database")
    p.add_argument("--memcached", default=None, help="host:port of Memcached")
    p.add_argument(
        "--amqp",
        default=os.environ.get("AMQP_URL"),
        help="AMQP URL of RabbitMQ (default: $AMQP_URL, which keeps credentials out of argv)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log every request")
    args = p.parse_args(argv)
    server = make_server(
        args.port, args.host, args.pg_dsn, args.memcached, args.amqp, quiet=not args.verbose
    )
    sys.stderr.write(f"webapp listening on http://{args.host}:{server.server_port}/\n")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.RequestHandlerClass.app.stop.set()  # type: ignore[attr-defined]
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
