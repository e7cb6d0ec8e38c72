"""Webhook delivery against a real local HTTP receiver: retries, no retry on 4xx, timeouts."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from stronghold_operator.models.outbound import OutboundPolicy
from stronghold_operator.platforms.http import HttpClient
from stronghold_operator.platforms.webhook import post_json
from tests.integration import health_kit as hk
from tests.support import dns as dns_kit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


class _Flaky(BaseHTTPRequestHandler):
    codes: ClassVar[list[int]] = []
    calls: ClassVar[list[str]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).calls.append(self.path)
        if self.path == "/slow":
            time.sleep(2)
        code = type(self).codes.pop(0) if type(self).codes else 200
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def flaky() -> Iterator[tuple[str, type[_Flaky]]]:
    handler = type("Flaky", (_Flaky,), {"codes": [], "calls": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", handler
    server.shutdown()
    server.server_close()


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    c = HttpClient()
    yield c
    await c.close()


async def test_retries_5xx_and_429_then_delivers(
    flaky: tuple[str, type[_Flaky]], client: HttpClient
) -> None:
    url, handler = flaky
    handler.codes = [503, 429]
    d = await post_json(client, f"{url}/hook", {"x": 1}, timeout_s=2, delays=[0.05, 0.05, 0.05])
    assert (d.ok, d.attempts, d.detail) == (True, 3, "HTTP 200")


async def test_no_retry_on_4xx(flaky: tuple[str, type[_Flaky]], client: HttpClient) -> None:
    url, handler = flaky
    handler.codes = [400]
    d = await post_json(client, f"{url}/hook", {"x": 1}, timeout_s=2, delays=[0.05, 0.05])
    assert (d.ok, d.attempts, d.detail) == (False, 1, "HTTP 400")
    assert handler.calls == ["/hook"]


async def test_timeout_and_unreachable(flaky: tuple[str, type[_Flaky]], client: HttpClient) -> None:
    url, _ = flaky
    d = await post_json(client, f"{url}/slow", {}, timeout_s=0.5, delays=[0.05])
    assert (d.ok, d.attempts, d.detail) == (False, 2, "Timeout")
    down = f"http://127.0.0.1:{hk.closed_port()}/hook"
    d = await post_json(client, down, {}, timeout_s=1, delays=[0.05, 0.05])
    assert (d.ok, d.attempts, d.detail) == (False, 3, "Unreachable")


async def test_the_outbound_guard_refuses_before_sending(
    flaky: tuple[str, type[_Flaky]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A webhook URL (also one read from a urlFrom Secret) passes the same guard: loopback
    when the operator's setting does not allow it, a name that resolves to a metadata
    address; nothing is sent and nothing is retried."""
    url, handler = flaky
    strict = HttpClient(policy=OutboundPolicy(allow_loopback=False))
    try:
        d = await post_json(strict, f"{url}/hook", {"x": 1}, timeout_s=2, delays=[0.05])
    finally:
        await strict.close()
    assert (d.ok, d.attempts) == (False, 1) and d.detail.startswith("Refused")
    attempts = dns_kit.only_loopback(monkeypatch)
    dns, transport = await dns_kit.serve(["169.254.169.254"])
    rebinding = HttpClient(
        policy=OutboundPolicy(allow_loopback=True),
        resolver=dns_kit.UdpResolver(transport.get_extra_info("sockname")),
    )
    try:
        port = url.rsplit(":", 1)[1]
        d = await post_json(rebinding, f"http://hooks.test:{port}/hook", {}, timeout_s=2, delays=[])
    finally:
        await rebinding.close()
        transport.close()
    assert (d.ok, d.detail) == (False, "Refused by the outbound policy")
    assert dns.asked == ["hooks.test"] and attempts == [] and handler.calls == []
