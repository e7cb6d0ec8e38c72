"""The outbound guard (issue 17, defect 2): every form of a forbidden address is refused, a
spec cannot set metadata or credential headers, every redirect hop is judged, and a fetched
value reaches status only as one of the configured words."""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from stronghold_operator.logic.health import assess_http
from stronghold_operator.models.base import InvalidSpec, parse
from stronghold_operator.models.health import HealthPolicySpec, HttpCheck
from stronghold_operator.models.outbound import (
    ALLOWED_DESTINATIONS,
    OutboundPolicy,
    destination_allowed,
    host_refusal,
    parse_destinations,
    secret_refusal,
)
from stronghold_operator.platforms.http import (
    GuardedResolver,
    HttpClient,
    RefusedAddress,
    Response,
)
from stronghold_operator.probes.base import ProbeResult
from stronghold_operator.probes.http import UNEXPECTED, HttpProbe

STRICT = OutboundPolicy(allow_loopback=False, allow_private=False)
TESTBED = OutboundPolicy(allow_loopback=True, allow_private=True)

# Every spelling of the metadata service (169.254.169.254) and of "this host".
ALWAYS_REFUSED = [
    "169.254.169.254",
    "[::ffff:169.254.169.254]",  # IPv4-mapped
    "[::ffff:a9fe:a9fe]",
    "[64:ff9b::a9fe:a9fe]",  # NAT64 well-known prefix
    "[64:ff9b::169.254.169.254]",
    "[64:ff9b:1::a9fe:a9fe]",  # local-use NAT64
    "[2002:a9fe:a9fe::1]",  # 6to4
    "[::169.254.169.254]",  # IPv4-compatible
    "2852039166",  # decimal
    "0251.0376.0251.0376",  # octal
    "0xa9.0xfe.0xa9.0xfe",  # hex
    "0xa9fea9fe",
    "169.254.43518",  # two-part form
    "169.254.1.1",
    "[fe80::1]",
    "[fe80::1%25eth0]",
    "0.0.0.0",
    "0",
    "[::]",
    "[::ffff:0.0.0.0]",
    "224.0.0.1",
    "[ff02::1]",
    "255.255.255.255",
    "metadata.google.internal",
    "METADATA.google.internal.",
    "100.100.100.200",
    "[fd00:ec2::254]",
]


@pytest.mark.parametrize("host", ALWAYS_REFUSED)
def test_always_refused_whatever_the_policy(host: str) -> None:
    assert host_refusal(host) is not None
    assert host_refusal(host, TESTBED) is not None


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.1", "0x7f000001", "[::1]", "[::ffff:127.0.0.1]", "localhost"]
)
def test_loopback_is_the_operators_choice(host: str) -> None:
    assert host_refusal(host, STRICT) is not None
    assert host_refusal(host, TESTBED) is None


@pytest.mark.parametrize("host", ["10.0.0.1", "192.168.1.1", "[fd12::1]", "100.64.0.1"])
def test_private_is_the_operators_choice(host: str) -> None:
    assert host_refusal(host, STRICT) is not None
    assert host_refusal(host, OutboundPolicy()) is None  # the default allows cluster ranges


def test_policy_from_settings() -> None:
    assert OutboundPolicy.parse("loopback,private") == TESTBED
    assert OutboundPolicy.parse("") == STRICT
    assert OutboundPolicy() == OutboundPolicy.parse("private")
    with pytest.raises(ValueError, match="STRONGHOLD_OUTBOUND_ALLOW"):
        OutboundPolicy.parse("everything")


@pytest.mark.parametrize("host", [h for h in ALWAYS_REFUSED if h != "0"])
def test_spec_urls_with_forbidden_hosts_are_invalid(host: str) -> None:
    spec = {"checks": [{"name": "web", "http": {"url": f"http://{host}/latest/"}}]}
    with pytest.raises(InvalidSpec) as err:
        parse(HealthPolicySpec, spec)
    assert err.value.field == "checks[0].http"


@pytest.mark.parametrize(
    "header",
    [
        "Metadata-Flavor",
        "metadata",
        "X-Google-Metadata-Request",
        "X-aws-ec2-metadata-token",
        "X-aws-ec2-metadata-token-ttl-seconds",
        "Host",
        "Authorization",
        "Cookie",
        "Proxy-Authorization",
        "Proxy-Connection",
        "Connection",
        "Transfer-Encoding",
        "Content-Length",
        "Bad Header",
    ],
)
def test_forbidden_headers_are_invalid_specs(header: str) -> None:
    spec = {"checks": [{"name": "web", "http": {"url": "http://web/", "headers": {header: "x"}}}]}
    with pytest.raises(InvalidSpec) as err:
        parse(HealthPolicySpec, spec)
    assert err.value.field == "checks[0].http.headers"
    assert repr(header) in str(err.value)


def test_harmless_headers_are_kept() -> None:
    check = HttpCheck.model_validate({"url": "http://web/", "headers": {"X-Probe": "ops"}})
    assert check.headers == {"X-Probe": "ops"}
    with pytest.raises(ValueError, match="one line"):
        HttpCheck.model_validate({"url": "http://web/", "headers": {"X-Probe": "a\r\nHost: b"}})


class _Answers(AbstractResolver):
    """A resolver of our own that answers with fixed addresses (no I/O)."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        return [
            ResolveResult(hostname=host, host=a, port=port, family=family, proto=0, flags=0)
            for a in self.addresses
        ]

    async def close(self) -> None:
        pass


@pytest.mark.parametrize(
    "addresses",
    [("169.254.169.254",), ("10.0.0.1", "169.254.169.254"), ("::ffff:169.254.169.254",)],
)
async def test_resolver_refuses_a_name_with_any_forbidden_address(
    addresses: tuple[str, ...],
) -> None:
    guard = GuardedResolver(OutboundPolicy(), _Answers(*addresses))
    with pytest.raises(RefusedAddress, match=r"web\.example resolves to a forbidden address"):
        await guard.resolve("web.example", 80)


async def test_resolver_passes_checked_answers_unchanged() -> None:
    inner = _Answers("10.0.0.7")
    hosts = await GuardedResolver(OutboundPolicy(), inner).resolve("web.example", 443)
    assert [(h["hostname"], h["host"], h["port"]) for h in hosts] == [
        ("web.example", "10.0.0.7", 443)
    ]
    with pytest.raises(RefusedAddress, match="loopback"):
        await GuardedResolver(STRICT, _Answers("127.0.0.1")).resolve("web.example", 80)


class _Redirecting(HttpClient):
    """Answers every request with a redirect to ``location``; records what was asked."""

    def __init__(self, location: str) -> None:
        super().__init__(policy=OutboundPolicy())
        self.location = location
        self.asked: list[str] = []

    async def request(self, method: str, url: str, **_: Any) -> Response:
        self.asked.append(url)
        return Response(302, {"location": self.location}, b"")


@pytest.mark.parametrize(
    "location",
    [
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://2852039166/",
        "http://0.0.0.0:8080/",
        "http://metadata.google.internal/computeMetadata/v1/",
    ],
)
async def test_every_redirect_hop_is_judged(location: str) -> None:
    client = _Redirecting(location)
    check = HttpCheck.model_validate({"url": "http://web.example/health", "followRedirects": True})
    result = await HttpProbe(client).probe(check, timeout_s=1, secrets={})
    assert client.asked == ["http://web.example/health"]
    assert result.urls[0].failure == "Refused"


class _Serving(HttpClient):
    def __init__(self, document: Mapping[str, Any]) -> None:
        super().__init__(policy=OutboundPolicy())
        self.body = json.dumps(document).encode()

    async def request(self, method: str, url: str, **_: Any) -> Response:
        return Response(200, {}, self.body)


@pytest.mark.parametrize(
    "value",
    ["AKIAIOSFODNN7EXAMPLE", "x" * 5000, "healthy but\nnot", {"token": "t"}, ["a"], 42],
)
async def test_fetched_values_never_reach_status(value: Any) -> None:
    check = HttpCheck.model_validate(
        {"url": "http://web.example/", "healthDocument": {"statusPath": "access_token"}}
    )
    doc = {"access_token": value, "database": value, "cache": "OK"}
    result = await HttpProbe(_Serving(doc)).probe(check, timeout_s=1, secrets={})
    url = result.urls[0]
    assert url.document_status == UNEXPECTED
    assert url.components == {"database": UNEXPECTED, "cache": "ok"}
    findings, status = assess_http(check, ProbeResult(latency_ms=1.0, urls=result.urls))
    text = json.dumps(status) + " ".join(f.message for f in findings)
    assert status["urls"][0]["documentStatus"] == UNEXPECTED
    if isinstance(value, str):
        assert value[:16] not in text
    assert {f.code for f in findings} == {"Unhealthy", "ComponentDown"}


async def test_a_configured_word_is_reported_as_configured() -> None:
    check = HttpCheck.model_validate(
        {"url": "http://web.example/", "healthDocument": {"healthyValues": ["Green"]}}
    )
    result = await HttpProbe(_Serving({"status": "GREEN"})).probe(check, timeout_s=1, secrets={})
    assert result.urls[0].document_status == "Green"
    with pytest.raises(ValueError, match="healthyValues"):
        HttpCheck.model_validate(
            {"url": "http://w/", "healthDocument": {"healthyValues": ["all good"]}}
        )


def test_secret_destinations_are_what_the_secret_says() -> None:
    allowed = parse_destinations(" db.prod.svc:5432, hooks.example.com ,[fd00::1]:443, bad:x")
    assert destination_allowed(allowed, "DB.prod.svc.", 5432)
    assert not destination_allowed(allowed, "db.prod.svc", 5433)
    assert destination_allowed(allowed, "hooks.example.com", 8443)  # no port: any port
    assert destination_allowed(allowed, "[fd00::1]", 443)
    assert not destination_allowed(allowed, "bad", 1)
    assert not destination_allowed(parse_destinations(None), "db.prod.svc", 5432)
    why = secret_refusal("spec.checks[0].postgres.password", "ns/db", allowed, "evil.example", 5432)
    assert why is not None and "spec.checks[0].postgres.password" in why
    assert ALLOWED_DESTINATIONS in why and "evil.example:5432" in why
