"""Prometheus probes against a real Prometheus scraping a real node exporter (both ours)."""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from stronghold_operator.logic import health as h
from stronghold_operator.models.base import parse
from stronghold_operator.models.health import HealthPolicySpec
from stronghold_operator.models.outbound import OutboundPolicy
from stronghold_operator.platforms.http import HttpClient
from stronghold_operator.probes.http import HttpProbe
from stronghold_operator.probes.prometheus import PrometheusProbe
from tests.integration import health_kit as hk
from tests.integration import kit
from tests.support import dns as dns_kit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

DISK = (
    '100 - 100 * node_filesystem_avail_bytes{mountpoint="/"}'
    ' / node_filesystem_size_bytes{mountpoint="/"}'
)


def _binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (Debian package {package})", pytrace=False)
    return path


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Our own node exporter and Prometheus (1 s scrapes) on free ports."""
    exporter_bin = _binary("prometheus-node-exporter", "prometheus-node-exporter")
    prom_bin = _binary("prometheus", "prometheus")
    work = tmp_path_factory.mktemp("prom")
    exporter_port, prom_port = kit.free_port(), kit.free_port()
    config = work / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: node\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{exporter_port}']}}]\n"
    )
    log = (work / "log.txt").open("wb")
    exporter = subprocess.Popen(
        [
            exporter_bin,
            f"--web.listen-address=127.0.0.1:{exporter_port}",
            "--collector.disable-defaults",
            "--collector.filesystem",
        ],
        stdout=log,
        stderr=log,
    )
    prom = subprocess.Popen(
        [
            prom_bin,
            f"--config.file={config}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{prom_port}"
    try:

        def scraped() -> bool:
            q = urllib.parse.quote('up{job="node"} == 1')
            try:
                with urllib.request.urlopen(f"{url}/api/v1/query?query={q}", timeout=2) as r:
                    return b'"value"' in r.read()
            except OSError:
                return False  # not listening yet

        kit.wait_until("Prometheus scraping the node exporter", scraped)
        yield url
    finally:
        for p in (prom, exporter):
            p.terminate()
            p.wait(timeout=20)
        log.close()


@pytest.fixture
async def probe() -> AsyncIterator[PrometheusProbe]:
    http = HttpProbe()
    yield PrometheusProbe(http)
    await http.close()


def policy(url: str, query: str, **extra: Any) -> HealthPolicySpec:
    check = {"name": "disk", "prometheus": {"url": url, "query": query, "unit": "%", **extra}}
    return parse(HealthPolicySpec, {"checks": [check]})


async def run(p: PrometheusProbe, spec: HealthPolicySpec) -> h.Assessment:
    c = spec.checks[0]
    assert c.prometheus is not None
    return h.assess(c, await p.probe(c.prometheus, timeout_s=5, secrets={}), None)


def disk_used_percent() -> float:
    st = os.statvfs("/")
    return 100 - 100 * st.f_bavail / st.f_blocks


async def test_disk_usage_within_and_past_bands(prometheus: str, probe: PrometheusProbe) -> None:
    used = disk_used_percent()
    above = {"warning": min(used + 5, 99), "critical": min(used + 8, 100)}
    a = await run(probe, policy(prometheus, DISK, bands=above))
    assert a.state == "Healthy", a.message
    series = a.measurements["series"]
    assert len(series) == 1 and "mountpoint=/" in series[0]["labels"]
    assert abs(series[0]["value"] - used) < 2  # the exporter sees the disk we see
    # A band set below the real usage: Critical, named by its series.
    below = {"warning": max(used - 8, 0), "critical": max(used - 4, 0)}
    a = await run(probe, policy(prometheus, DISK, bands=below))
    assert (a.state, a.reason) == ("Critical", "MetricCritical")
    assert "mountpoint=/" in a.message and "%" in a.message
    found = h.classify(
        policy(prometheus, DISK, bands=below),
        [h.CheckVerdict("disk", "prometheus", a.state, a.findings, a.message)],
    )
    assert found is not None and found.severity == "P3"


async def test_lower_bands_empty_result_and_bad_query(
    prometheus: str, probe: PrometheusProbe
) -> None:
    a = await run(
        probe,
        policy(prometheus, 'up{job="node"}', lowerBands={"warningBelow": 1, "criticalBelow": 1}),
    )
    assert a.state == "Healthy" and a.measurements["series"][0]["value"] == 1
    a = await run(probe, policy(prometheus, "no_such_metric", bands={"warning": 1, "critical": 2}))
    assert (a.state, a.reason) == ("Unknown", "NoData")
    a = await run(
        probe,
        policy(
            prometheus,
            "no_such_metric",
            bands={"warning": 1, "critical": 2},
            emptyResult="Critical",
        ),
    )
    assert (a.state, a.reason) == ("Critical", "NoData")
    a = await run(probe, policy(prometheus, "sum(", bands={"warning": 1, "critical": 2}))
    assert (a.state, a.reason) == ("Unknown", "ProbeError") and "bad_data" in a.message


async def test_down_wrong_port(probe: PrometheusProbe) -> None:
    url = f"http://127.0.0.1:{hk.closed_port()}"
    a = await run(probe, policy(url, DISK, bands={"warning": 85, "critical": 95}))
    assert (a.state, a.reason) == ("Critical", "Unreachable")


async def test_a_forbidden_prometheus_address_is_refused(
    prometheus: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Prometheus URL passes the outbound guard when it resolves: a name answered with
    the metadata address is refused, and nothing is sent (our own DNS server on 127.0.0.1)."""
    attempts = dns_kit.only_loopback(monkeypatch)
    dns, transport = await dns_kit.serve(["169.254.169.254"])
    client = HttpClient(
        policy=OutboundPolicy(allow_loopback=True),
        resolver=dns_kit.UdpResolver(transport.get_extra_info("sockname")),
    )
    http = HttpProbe(client)
    port = urllib.parse.urlsplit(prometheus).port
    try:
        a = await run(
            PrometheusProbe(http),
            policy(f"http://prom.test:{port}", DISK, bands={"warning": 80, "critical": 90}),
        )
    finally:
        await http.close()
        transport.close()
    assert (a.state, a.reason) == ("Unknown", "Refused"), a.message
    assert "169.254.169.254" in a.message and dns.asked == ["prom.test"] and attempts == []
