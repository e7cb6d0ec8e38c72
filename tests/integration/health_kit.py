"""Helpers for the HealthPolicy probe tests: the real demo web app and service checks."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest

from tests.integration import kit

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
MEMCACHED = "127.0.0.1:11211"
AMQP = "amqp://guest:guest@127.0.0.1:5672/%2F"


def require(what: str, port: int) -> None:
    """Fail (never skip) with a message naming the missing service."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=3).close()
    except OSError as exc:
        pytest.fail(f"{what} is not reachable on 127.0.0.1:{port} ({exc})", pytrace=False)


@contextmanager
def scratch_database(prefix: str, schema: str) -> Iterator[str]:
    """A fresh database on the shared PostgreSQL with ``schema`` (SQL) run in it; dropped
    (connections and all) afterwards."""
    require("PostgreSQL", 5432)
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        dsn = PG_DSN.replace("dbname=postgres", f"dbname={name}")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(schema)
        yield name
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def closed_port() -> int:
    """A port nothing listens on (a service that is down)."""
    return kit.free_port()


@contextmanager
def webapp(*extra: str) -> Iterator[str]:
    """The demo web app as a real child process; yields its base URL."""
    port = kit.free_port()
    argv = [sys.executable, "-m", "stronghold_testbed.webapp", "--port", str(port)]
    proc = subprocess.Popen([*argv, *extra], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    pytest.fail(f"the demo web app did not start: {err}", pytrace=False)
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class TcpProxy:
    """A real TCP forwarder we can stop and start: a service that goes down and comes back.

    Stopping closes the listener and every forwarded connection, so clients see exactly what
    they would see if the service itself went away (connection reset, then refused).
    """

    def __init__(self, target_port: int, port: int | None = None) -> None:
        self.target_port = target_port
        self.port = port or kit.free_port()
        self.accepted = 0  # connections made to the proxy (a test can assert none were)
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port))
        srv.listen(64)
        self._server = srv
        threading.Thread(target=self._accept, args=(srv,), daemon=True).start()

    def stop(self) -> None:
        srv, self._server = self._server, None
        if srv is not None:
            with contextlib.suppress(OSError):
                srv.shutdown(socket.SHUT_RDWR)
            srv.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _accept(self, srv: socket.socket) -> None:
        while True:
            try:
                client, _ = srv.accept()
            except OSError:
                return
            self.accepted += 1
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)


class Receiver:
    """A real local HTTP receiver for webhooks: records every POST (headers and JSON body)."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                received.append(
                    {
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "raw": raw.decode(),
                        "body": json.loads(raw),
                    }
                )
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self, policy: str) -> list[str]:
        return [
            r["body"]["event"]
            for r in self.received
            if isinstance(r["body"], dict) and r["body"]["policy"]["name"] == policy
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Sleeper:
    """A test-owned session running ``SELECT pg_sleep(600)`` in a thread (a query for
    remediation to terminate)."""

    def __init__(self, database: str, application_name: str, user: str = "postgres") -> None:
        dsn = f"host=127.0.0.1 port=5432 user={user} dbname={database}"
        self.conn = psycopg.connect(dsn, autocommit=True, application_name=application_name)
        self.pid = self.conn.info.backend_pid
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.conn.execute("SELECT pg_sleep(600)")
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.cancel_safe()
        self.thread.join(timeout=10)
        with contextlib.suppress(Exception):
            self.conn.close()
