"""Memcached probes against real memcached: the shared one, and one we start for evictions."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pymemcache.client.base import Client

from stronghold_operator.logic import health as h
from stronghold_operator.models.base import parse
from stronghold_operator.models.health import HealthPolicySpec
from stronghold_operator.probes.memcached import MemcachedProbe
from tests.integration import health_kit as hk
from tests.integration import kit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def own_memcached() -> Iterator[str]:
    """A 2 MiB memcached of our own on a free port (so evictions are ours alone)."""
    binary = shutil.which("memcached")
    if binary is None:
        pytest.fail("the memcached binary is not installed (Debian package memcached)")
    port = kit.free_port()
    proc = subprocess.Popen(
        [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "2", "-u", "nobody"]
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                Client(("127.0.0.1", port), connect_timeout=1).version()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"our memcached on {address} did not start")
                time.sleep(0.1)
        yield address
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
async def probe() -> AsyncIterator[MemcachedProbe]:
    p = MemcachedProbe()
    yield p
    await p.close()


def policy(address: str, **extra: Any) -> HealthPolicySpec:
    return parse(
        HealthPolicySpec,
        {"checks": [{"name": "cache", "memcached": {"address": address, **extra}}]},
    )


async def run(p: MemcachedProbe, spec: HealthPolicySpec, prev: Any = None) -> h.Assessment:
    c = spec.checks[0]
    assert c.memcached is not None
    return h.assess(c, await p.probe(c.memcached, timeout_s=3, secrets={}), prev)


async def test_shared_memcached_healthy_with_real_hits(probe: MemcachedProbe) -> None:
    hk.require("Memcached", 11211)
    client = Client(("127.0.0.1", 11211))
    key = f"hp-{uuid.uuid4().hex}"
    client.set(key, b"v")
    first = await run(probe, policy(hk.MEMCACHED))
    for _ in range(50):
        assert client.get(key) == b"v"
    second = await run(probe, policy(hk.MEMCACHED), {"measurements": first.measurements})
    client.delete(key)
    assert second.measurements["cmdGet"] >= first.measurements.get("cmdGet", 0) + 50
    assert second.measurements["currConnections"] >= 1
    assert second.measurements["limitMaxBytes"] > 0
    # Others may use the shared cache meanwhile; our 50 hits dominate this interval.
    assert second.measurements["intervalHitRatio"] > 80
    assert second.state == "Healthy", second.message


async def test_low_hit_ratio_from_real_misses(probe: MemcachedProbe, own_memcached: str) -> None:
    host, _, port = own_memcached.rpartition(":")
    client = Client((host, int(port)))
    client.set("present", b"v")
    first = await run(probe, policy(own_memcached))
    for i in range(90):
        assert client.get(f"missing-{i}") is None
    for _ in range(10):
        client.get("present")
    a = await run(probe, policy(own_memcached), {"measurements": first.measurements})
    assert a.measurements["intervalHitRatio"] == pytest.approx(10.0)
    assert (a.state, a.reason) == ("Critical", "HitRatioLow")
    assert "10.0%" in a.message
    found = h.classify(
        policy(own_memcached),
        [h.CheckVerdict("cache", "memcached", a.state, a.findings, a.message)],
    )
    assert found is not None and found.severity == "P3"


async def test_evictions_and_memory_from_real_writes(
    probe: MemcachedProbe, own_memcached: str
) -> None:
    host, _, port = own_memcached.rpartition(":")
    client = Client((host, int(port)))
    spec = policy(
        own_memcached,
        evictions={"warning": 5, "critical": 20},
        memory={"warning": 20, "critical": 40},
    )
    first = await run(probe, spec)
    for i in range(100):
        client.set(f"big-{i}", b"x" * 100_000)
    a = await run(probe, spec, {"measurements": first.measurements})
    assert a.measurements["evictionsPerInterval"] >= 20
    assert a.measurements["memoryPercent"] > 40
    assert {f.code for f in a.findings} >= {"Evictions", "MemoryHigh"}
    assert a.state == "Critical"


async def test_down_wrong_port(probe: MemcachedProbe) -> None:
    a = await run(probe, policy(f"127.0.0.1:{hk.closed_port()}"))
    assert (a.state, a.reason) == ("Critical", "Unreachable")
    found = h.classify(
        policy("127.0.0.1:1"), [h.CheckVerdict("cache", "memcached", a.state, a.findings, "")]
    )
    assert found is not None and found.severity == "P2"


def _start_memcached(port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("memcached")
    assert binary is not None, "the memcached binary is not installed"
    argv = [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "8", "-u", "nobody"]
    proc = subprocess.Popen(argv)
    deadline = time.monotonic() + 10
    while True:
        try:
            Client(("127.0.0.1", port), connect_timeout=1).version()
            return proc
        except OSError:
            assert time.monotonic() < deadline, "our memcached did not start"
            time.sleep(0.1)


async def test_reconnects_after_server_restart(probe: MemcachedProbe) -> None:
    """A kept connection that the server dropped is replaced, not reported as down."""
    port = kit.free_port()
    spec = policy(f"127.0.0.1:{port}")
    for _ in range(2):
        proc = await asyncio.to_thread(_start_memcached, port)
        try:
            a = await run(probe, spec)
            assert a.state == "Healthy", a.message
        finally:
            proc.terminate()
            proc.wait(timeout=10)
