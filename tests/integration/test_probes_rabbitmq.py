"""RabbitMQ probes against the real broker: a queue really filled with no consumer, etc."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pika
import pytest

from stronghold_operator.logic import health as h
from stronghold_operator.models.base import parse
from stronghold_operator.models.health import HealthPolicySpec
from stronghold_operator.models.outbound import OutboundPolicy
from stronghold_operator.platforms.http import HttpClient
from stronghold_operator.probes.rabbitmq import RabbitmqProbe
from tests.integration import health_kit as hk
from tests.support import dns as dns_kit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def channel() -> Iterator[Any]:
    hk.require("RabbitMQ", 5672)
    conn = pika.BlockingConnection(pika.URLParameters(hk.AMQP))
    ch = conn.channel()
    yield ch
    conn.close()


@pytest.fixture
async def probe() -> AsyncIterator[RabbitmqProbe]:
    p = RabbitmqProbe()
    yield p
    await p.close()


def policy(*queues: dict[str, Any]) -> HealthPolicySpec:
    return parse(
        HealthPolicySpec,
        {
            "checks": [
                {
                    "name": "queue",
                    "rabbitmq": {
                        "url": {"secretKeyRef": {"name": "mq", "key": "url"}},
                        "queues": list(queues),
                    },
                }
            ]
        },
    )


async def run(p: RabbitmqProbe, spec: HealthPolicySpec, url: str = hk.AMQP) -> h.Assessment:
    c = spec.checks[0]
    assert c.rabbitmq is not None
    return h.assess(c, await p.probe(c.rabbitmq, timeout_s=5, secrets={"url": url}), None)


async def test_healthy_queue_with_a_consumer(probe: RabbitmqProbe, channel: Any) -> None:
    name = f"hp-{uuid.uuid4().hex[:8]}"
    channel.queue_declare(name, auto_delete=True)
    channel.basic_consume(name, lambda *a: None)
    try:
        a = await run(probe, policy({"name": name, "minConsumers": 1}))
    finally:
        channel.queue_delete(name)
    assert a.state == "Healthy", a.message
    assert a.measurements["queues"] == [{"name": name, "messages": 0, "consumers": 1}]


async def test_queue_filled_with_no_consumer(probe: RabbitmqProbe, channel: Any) -> None:
    name = f"hp-{uuid.uuid4().hex[:8]}"
    channel.queue_declare(name)
    try:
        for i in range(25):
            channel.basic_publish("", name, f"job {i}".encode())
        spec = policy({"name": name, "depth": {"warning": 10, "critical": 20}, "minConsumers": 1})
        a = await run(probe, spec)
    finally:
        channel.queue_delete(name)
    assert a.measurements["queues"][0]["messages"] == 25
    codes = {f.code: f.level for f in a.findings}
    assert codes == {"QueueDepthHigh": "critical", "ConsumersLow": "warning"}
    assert a.state == "Critical" and f"queue {name}: 25 messages" in a.message
    found = h.classify(spec, [h.CheckVerdict("queue", "rabbitmq", a.state, a.findings, "")])
    assert found is not None and found.severity == "P3"


async def test_missing_queue(probe: RabbitmqProbe, channel: Any) -> None:
    present = f"hp-{uuid.uuid4().hex[:8]}"
    channel.queue_declare(present, auto_delete=True)
    missing = f"hp-missing-{uuid.uuid4().hex[:8]}"
    try:
        a = await run(probe, policy({"name": missing}, {"name": present}))
    finally:
        channel.queue_delete(present)
    assert (a.state, a.reason) == ("Critical", "QueueMissing")
    # The 404 closed the channel; the next queue was still measured on a new one.
    assert a.measurements["queues"][1] == {"name": present, "messages": 0, "consumers": 0}


async def test_down_wrong_port_and_bad_credentials(probe: RabbitmqProbe) -> None:
    a = await run(probe, policy(), f"amqp://guest:guest@127.0.0.1:{hk.closed_port()}/%2F")
    assert (a.state, a.reason) == ("Critical", "Unreachable")
    secret = f"wrong-{uuid.uuid4().hex}"
    a = await run(probe, policy(), f"amqp://guest:{secret}@127.0.0.1:5672/%2F")
    assert (a.state, a.reason) == ("Critical", "Unreachable")
    assert secret not in a.message
    found = h.classify(policy(), [h.CheckVerdict("queue", "rabbitmq", a.state, a.findings, "")])
    assert found is not None and found.severity == "P2"


async def test_connection_is_reused(probe: RabbitmqProbe, channel: Any) -> None:
    name = f"hp-{uuid.uuid4().hex[:8]}"
    channel.queue_declare(name, auto_delete=True)
    spec = policy({"name": name})
    try:
        await run(probe, spec)
        brokers = list(probe._brokers.values())
        first = brokers[0].conn
        await run(probe, spec)
    finally:
        channel.queue_delete(name)
    assert len(brokers) == 1 and brokers[0].conn is first and first.is_open


async def test_a_forbidden_management_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The management URL passes the outbound guard when it resolves: a name answered with the
    metadata address is refused and the management password is never sent."""
    attempts = dns_kit.only_loopback(monkeypatch)
    dns, transport = await dns_kit.serve(["169.254.169.254"])
    client = HttpClient(
        policy=OutboundPolicy(allow_loopback=True),
        resolver=dns_kit.UdpResolver(transport.get_extra_info("sockname")),
    )
    spec = parse(
        HealthPolicySpec,
        {
            "checks": [
                {
                    "name": "queue",
                    "rabbitmq": {
                        "url": {"secretKeyRef": {"name": "mq", "key": "url"}},
                        "management": {
                            "url": "http://mgmt.test:15672",
                            "password": {"secretKeyRef": {"name": "mq", "key": "pw"}},
                        },
                    },
                }
            ]
        },
    )
    c = spec.checks[0]
    assert c.rabbitmq is not None
    probe = RabbitmqProbe(client)
    try:
        secrets = {"url": hk.AMQP, "management-password": "guest"}
        result = await probe.probe(c.rabbitmq, timeout_s=5, secrets=secrets)
    finally:
        await probe.close()
        await client.close()
        transport.close()
    assert result.failure == "Refused" and "169.254.169.254" in result.message
    assert dns.asked == ["mgmt.test"]
    assert all(a[1] == 5672 for a in attempts)  # only the AMQP connection (pika's own socket)
