"""HTTP probes against the real demo web app (and small real servers for edge cases)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from stronghold_operator.logic import health as h
from stronghold_operator.models.base import parse
from stronghold_operator.models.health import HealthPolicySpec, HttpCheck
from stronghold_operator.models.outbound import OutboundPolicy
from stronghold_operator.platforms.http import HttpClient
from stronghold_operator.probes.http import UNEXPECTED, USER_AGENT, HttpProbe
from stronghold_operator.probes.runner import Prober
from tests.integration import health_kit as hk
from tests.support import dns as dns_kit

pytestmark = [pytest.mark.integration, pytest.mark.serial, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def app() -> Iterator[str]:
    hk.require("PostgreSQL", 5432)
    hk.require("Memcached", 11211)
    hk.require("RabbitMQ", 5672)
    with hk.webapp("--pg-dsn", hk.PG_DSN, "--memcached", hk.MEMCACHED, "--amqp", hk.AMQP) as url:
        yield url


@pytest.fixture
async def probe() -> AsyncIterator[HttpProbe]:
    p = HttpProbe()
    yield p
    await p.close()


def check(url: str | list[str], **extra: Any) -> HttpCheck:
    urls = {"url": url} if isinstance(url, str) else {"urls": url}
    return parse(HttpCheck, {**urls, **extra})


def policy_of(url: str, **http: Any) -> HealthPolicySpec:
    return parse(
        HealthPolicySpec,
        {"failureThreshold": 1, "checks": [{"name": "web", "http": {"url": url, **http}}]},
    )


async def verdict(p: HttpProbe, spec: HealthPolicySpec, limit: float = 2.0) -> h.Assessment:
    c = spec.checks[0]
    assert c.http is not None
    return h.assess(c, await p.probe(c.http, timeout_s=limit, secrets={}), None)


async def test_guide_health_document_healthy(app: str, probe: HttpProbe) -> None:
    a = await verdict(probe, policy_of(f"{app}/health/", healthDocument={}))
    assert a.state == "Healthy", a.message
    url = a.measurements["urls"][0]
    assert url["statusCode"] == 200 and url["documentStatus"] == "healthy"
    assert url["components"] == {
        "database": "connected",
        "cache": "connected",
        "queue": "connected",
    }
    assert a.latency_ms is not None and a.latency_ms > 0


async def test_the_guides_four_endpoints(app: str, probe: HttpProbe) -> None:
    urls = [f"{app}/", f"{app}/health/", f"{app}/admin/", f"{app}/api/"]
    result = await probe.probe(check(urls), timeout_s=2, secrets={})
    assert [u.status_code for u in result.urls] == [200, 200, 200, 200]
    assert result.latency_ms == max(u.latency_ms or 0 for u in result.urls)


async def test_latency_bands_with_the_slow_endpoint(app: str, probe: HttpProbe) -> None:
    warn = await verdict(probe, policy_of(f"{app}/slow?ms=250"))
    assert (warn.state, warn.reason) == ("Warning", "LatencyWarning")
    crit = await verdict(probe, policy_of(f"{app}/slow?ms=600"))
    assert (crit.state, crit.reason) == ("Critical", "LatencyCritical")
    assert "500ms" in crit.message


async def test_hanging_endpoint_times_out(app: str, probe: HttpProbe) -> None:
    a = await verdict(probe, policy_of(f"{app}/hang"), limit=1.0)
    assert (a.state, a.reason) == ("Critical", "Timeout")
    assert "1s" in a.message


async def test_html_error_page_is_a_result(app: str, probe: HttpProbe) -> None:
    a = await verdict(probe, policy_of(f"{app}/status?code=502", healthDocument={}))
    assert (a.state, a.reason) == ("Critical", "UnexpectedStatus")
    assert a.measurements["urls"][0]["statusCode"] == 502
    assert "documentStatus" not in a.measurements["urls"][0]


async def test_429_is_unknown_and_retry_after_is_honoured(app: str, probe: HttpProbe) -> None:
    spec = policy_of(f"{app}/status?code=429&retry_after=30")
    a = await verdict(probe, spec)
    assert (a.state, a.reason) == ("Unknown", "RateLimited")
    assert a.measurements["retryAfterSeconds"] == 30
    again = await probe.probe(spec.checks[0].http, timeout_s=2, secrets={})  # type: ignore[arg-type]
    assert again.urls[0].failure == "RateLimited"
    assert again.urls[0].status_code is None  # not asked again before Retry-After
    assert "Retry-After" in again.urls[0].message


async def test_down_wrong_port(probe: HttpProbe) -> None:
    a = await verdict(probe, policy_of(f"http://127.0.0.1:{hk.closed_port()}/health/"))
    assert (a.state, a.reason) == ("Critical", "Unreachable")


async def test_database_down_is_one_p1_rooted_in_the_database() -> None:
    """The web app's database is unreachable: its /health/ says so, and so does the db check."""
    port = hk.closed_port()
    dsn = f"host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=2"
    with hk.webapp("--pg-dsn", dsn, "--memcached", hk.MEMCACHED) as url:
        spec = parse(
            HealthPolicySpec,
            {
                "failureThreshold": 1,
                "checks": [
                    {"name": "web", "http": {"url": f"{url}/health/", "healthDocument": {}}},
                    {"name": "db", "postgres": {"host": "127.0.0.1", "port": port}},
                    {"name": "cache", "memcached": {"address": hk.MEMCACHED}},
                ],
            },
        )
        prober = Prober()
        try:
            results = await prober.run(spec, {})
        finally:
            await prober.close()
    web = results["web"].urls[0]
    assert web.status_code == 503 and web.components["database"] == "disconnected"
    assert web.components["cache"] == "connected"
    ev = h.evaluate(spec, "stack", {}, results, None, datetime.now(UTC))
    assert ev.severity == "P1"
    assert ev.status["incident"]["rootCause"] == "db"
    assert "also affected: web" in ev.status["incident"]["summary"]
    assert len(ev.notifications) == 1  # one incident, not one per failing check


class _Recorder(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, str]]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        type(self).seen.append(dict(self.headers.items()))
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


@pytest.fixture
def recorder() -> Iterator[tuple[str, type[_Recorder]]]:
    handler = type("Rec", (_Recorder,), {"seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_port}", handler
    server.shutdown()
    server.server_close()


async def test_identifies_itself_and_sends_no_credentials(
    recorder: tuple[str, type[_Recorder]], probe: HttpProbe
) -> None:
    url, handler = recorder
    for _ in range(3):
        result = await probe.probe(check(f"{url}/x"), timeout_s=2, secrets={})
        assert result.urls[0].status_code == 200
    headers = [{k.lower(): v for k, v in seen.items()} for seen in handler.seen]
    assert all(hd["user-agent"] == USER_AGENT for hd in headers)
    assert not any("authorization" in hd or "cookie" in hd for hd in headers)


async def test_identical_probes_share_an_answer_for_a_tenth_of_the_interval(
    recorder: tuple[str, type[_Recorder]],
) -> None:
    """Two policies' identical checks (names differ) send one request; a policy with a 1 s
    interval takes an answer at most 0.1 s old; past the prober's window all send anew."""
    url, handler = recorder

    def spec(name: str, interval: str) -> HealthPolicySpec:
        check = {"name": name, "timeout": "1s", "http": {"url": f"{url}/x"}}
        return parse(HealthPolicySpec, {"interval": interval, "checks": [check]})

    prober = Prober()
    prober.reuse_s = 0.5
    try:
        assert (await prober.run(spec("a", "10s"), {}))["a"].urls[0].status_code == 200
        assert (await prober.run(spec("b", "10s"), {}))["b"].urls[0].status_code == 200
        assert len(handler.seen) == 1
        await asyncio.sleep(0.15)
        await prober.run(spec("fast", "1s"), {})
        assert len(handler.seen) == 2  # 0.15 s is too old for a 1 s interval
        await prober.run(spec("b", "10s"), {})
        assert len(handler.seen) == 2  # the fresh answer serves the 10 s policy
        await asyncio.sleep(0.55)
        await prober.run(spec("a", "10s"), {})
        assert len(handler.seen) == 3  # past the prober's window: asked again
    finally:
        await prober.close()


async def test_redirect_to_metadata_is_refused(
    recorder: tuple[str, type[_Recorder]], probe: HttpProbe
) -> None:
    url, _ = recorder
    result = await probe.probe(
        check(f"{url}/redirect", followRedirects=True), timeout_s=2, secrets={}
    )
    assert result.urls[0].failure == "Refused"
    assert "metadata" in result.urls[0].message
    c = parse(
        HealthPolicySpec,
        {"checks": [{"name": "w", "http": {"url": f"{url}/redirect", "followRedirects": True}}]},
    ).checks[0]
    a = h.assess(c, result, None)
    assert (a.state, a.reason) == ("Unknown", "Refused")


async def test_link_local_literal_refused_even_without_validation(probe: HttpProbe) -> None:
    # The model refuses it already; the probe refuses it again (defence in depth).
    spec = HttpCheck.model_construct(url="http://169.254.169.254/latest/", urls=[])
    result = await probe.probe(spec, timeout_s=2, secrets={})
    assert result.urls[0].failure == "Refused"


async def test_hanging_target_never_delays_the_other_checks(app: str) -> None:
    spec = parse(
        HealthPolicySpec,
        {
            "checks": [
                {"name": "hang", "timeout": "2s", "http": {"url": f"{app}/hang"}},
                {"name": "fast", "timeout": "2s", "http": {"url": f"{app}/api/"}},
                {"name": "cache", "memcached": {"address": hk.MEMCACHED}},
            ]
        },
    )
    prober = Prober()
    try:
        started = time.perf_counter()
        results = await prober.run(spec, {})
        elapsed = time.perf_counter() - started
    finally:
        await prober.close()
    assert results["hang"].urls[0].failure == "Timeout"
    assert results["fast"].urls[0].status_code == 200
    assert (results["fast"].latency_ms or 0) < 1000
    assert results["cache"].failure is None
    assert 1.9 < elapsed < 3.0  # concurrent: the round lasts as long as the slowest timeout


async def test_per_target_cap_queues_requests_to_one_host(app: str) -> None:
    """Six probes of one host with a cap of 2 run in three waves, never six at once."""
    capped = HttpProbe(per_target=2)
    try:
        started = time.perf_counter()
        results = await asyncio.gather(
            *(capped.probe(check(f"{app}/slow?ms=300"), timeout_s=5, secrets={}) for _ in range(6))
        )
        elapsed = time.perf_counter() - started
    finally:
        await capped.close()
    assert all(r.urls[0].status_code == 200 for r in results)
    assert elapsed >= 0.85, elapsed


TOKEN = "AKIA-REBOUND-SECRET-0123"


class _Leaky(BaseHTTPRequestHandler):
    """A target that serves a credential-looking value where the health status should be."""

    hits: ClassVar[list[str]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        type(self).hits.append(self.headers.get("Host", ""))
        body = json.dumps({"access_token": TOKEN, "database": TOKEN, "cache": "ok"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")  # every round opens (and resolves) anew
        self.end_headers()
        self.wfile.write(body)


async def test_dns_rebinding_never_reaches_the_forbidden_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A name that resolves to 127.0.0.1 once and to the metadata address afterwards (our
    own DNS server on 127.0.0.1): the one checked answer is the one connected to, the
    rebound answers are refused before any connection, and no fetched value reaches status."""
    dns, transport = await dns_kit.serve(["127.0.0.1", "169.254.169.254"])
    handler = type("Leaky", (_Leaky,), {"hits": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    connects = dns_kit.only_loopback(monkeypatch)
    client = HttpClient(
        policy=OutboundPolicy(allow_loopback=True),
        resolver=dns_kit.UdpResolver(transport.get_extra_info("sockname")),
        ttl_dns_cache=None,
    )
    probe = HttpProbe(client)
    spec = policy_of(
        f"http://rebind.test:{server.server_port}/health",
        healthDocument={"statusPath": "access_token"},
    )
    c = spec.checks[0]
    assert c.http is not None
    try:
        results = [await probe.probe(c.http, timeout_s=2, secrets={}) for _ in range(3)]
    finally:
        await probe.close()
        server.shutdown()
        server.server_close()
        transport.close()
    assert dns.asked == ["rebind.test"] * 3  # one lookup per connection, none by a pre-check
    first, *rebound = [r.urls[0] for r in results]
    assert first.status_code == 200 and first.document_status == UNEXPECTED
    assert first.components["database"] == UNEXPECTED
    for url in rebound:
        assert url.failure == "Refused" and "169.254.169.254" in url.message
    assert [a[0] for a in connects] == ["127.0.0.1"] and len(handler.hits) == 1
    assert handler.hits[0] == f"rebind.test:{server.server_port}"  # Host stays the name
    for result in results:
        ev = h.evaluate(spec, "rebind", {}, {"web": result}, None, datetime.now(UTC))
        text = json.dumps(ev.status) + " ".join(x.message for x in ev.conditions)
        assert TOKEN not in text and "AKIA" not in text
