"""Alert quality with the real operator against a real Memcached the test starts itself.

A ratio is judged only on a big enough sample of the interval (spec.minSample): a freshly
started cache with a few gets opens no incident, a real low hit ratio under real traffic
still does (and resolves, damped, when the traffic stops), and a real restart of the cache
(its counters reset) opens none.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from pymemcache.client.base import Client

from stronghold_operator.conditions import parse_rfc3339
from tests.integration import kit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


class Cache:
    """A memcached of this test's own on a free 127.0.0.1 port (restartable on the same)."""

    def __init__(self) -> None:
        binary = shutil.which("memcached")
        if binary is None:
            pytest.fail("the memcached binary is not installed (Debian package memcached)")
        self.binary = binary
        self.port = kit.free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [self.binary, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-m", "8"]
        self.proc = subprocess.Popen([*argv, "-u", "nobody"])
        kit.wait_until(f"memcached on {self.address}", self._answers, timeout=10, interval=0.05)

    def _answers(self) -> bool:
        try:
            Client(("127.0.0.1", self.port), connect_timeout=1).version()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def client(self) -> Client:
        return Client(("127.0.0.1", self.port), connect_timeout=2, timeout=2)

    def gets(self, hits: int, misses: int) -> None:
        """Real gets: ``hits`` of a present key, ``misses`` of absent ones."""
        c = self.client()
        c.set("present", b"v")
        for _ in range(hits):
            assert c.get("present") == b"v"
        for i in range(misses):
            assert c.get(f"absent-{i}") is None
        c.close()


@pytest.fixture
def cache() -> Iterator[Cache]:
    c = Cache()
    c.start()
    yield c
    c.stop()


def policy(name: str, namespace: str, address: str, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "interval": "2s",
        "timeout": "1s",
        "failureThreshold": 1,
        "checks": [{"name": "cache", "memcached": {"address": address}}],
    }
    spec.update(extra)
    return {
        "apiVersion": "ops.stronghold.io/v1alpha1",
        "kind": "HealthPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def get(namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = kit.kubectl_json("get", "healthpolicy", name, "-n", namespace)
    return obj


def wait_condition(
    namespace: str, name: str, type_: str, status: str, reason: str | None = None
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = get(namespace, name)
        c = kit.condition(obj, type_)
        if c and c["status"] == status and (reason is None or c["reason"] == reason):
            return obj
        return None

    return kit.wait_until(f"{name}: {type_}={status} {reason or ''}", probe, timeout=60)


def metric(op: kit.OperatorProcess, family: str, namespace: str, name: str) -> float | None:
    """A series of the policy's cache check on the operator's /metrics (None: absent)."""
    url = f"http://127.0.0.1:{op.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    wanted = {"namespace": namespace, "policy": name, "check": "cache"}
    for m in re.finditer(rf"^{family}\{{(.*)\}} (\S+)$", text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if wanted.items() <= labels.items():
            return float(m.group(2))
    return None


def rounds(op: kit.OperatorProcess, namespace: str, name: str) -> int:
    """Answered probes of the policy's cache check so far."""
    family = "stronghold_health_probe_duration_seconds_count"
    return int(metric(op, family, namespace, name) or 0)


def wait_rounds(op: kit.OperatorProcess, namespace: str, name: str, more: int) -> None:
    start = rounds(op, namespace, name)
    kit.wait_until(
        f"{more} more rounds of {name}",
        lambda: rounds(op, namespace, name) >= start + more,
        timeout=10 + 3 * more,
    )


def opened(namespace: str, name: str) -> list[dict[str, Any]]:
    return [e for e in kit.events_for(namespace, name) if e["reason"] == "IncidentOpened"]


def test_fresh_cache_with_a_few_gets_opens_no_incident(
    namespace: str, run_operator: Callable[..., kit.OperatorProcess], cache: Cache
) -> None:
    """The issue's case: a cache just started, with two, then three gets (half misses)."""
    cache.gets(hits=1, misses=1)  # 50 % since start, on 2 gets
    kit.apply(policy("quiet", namespace, cache.address))
    op = run_operator(namespace)
    obj = wait_condition(namespace, "quiet", "Healthy", "True")
    check = obj["status"]["checks"][0]
    assert check["measurements"]["hitRatio"] == 50.0, check  # measured, not judged
    assert check["message"].startswith("cache answering; hit ratio not judged (no baseline"), check

    # 3 gets in one command, so in one interval: 33 %. The operator measures them (its
    # /metrics gauge is the interval's ratio) and judges nothing on them.
    c = cache.client()
    assert c.get_many(["present", "absent-a", "absent-b"]) == {"present": b"v"}
    c.close()
    family = "stronghold_health_cache_hit_ratio_percent"
    kit.wait_until(
        "the interval's 33.33 % on /metrics",
        lambda: metric(op, family, namespace, "quiet") == 33.33,
        timeout=20,
        interval=0.2,
    )
    wait_rounds(op, namespace, "quiet", 3)
    obj = get(namespace, "quiet")
    assert kit.condition(obj, "IncidentOpen")["reason"] == "NoIncident"  # type: ignore[index]
    assert kit.condition(obj, "Healthy")["status"] == "True"  # type: ignore[index]
    assert obj["status"]["checks"][0]["state"] == "Healthy"
    assert metric(op, "stronghold_health_probe_success", namespace, "quiet") == 1
    assert opened(namespace, "quiet") == []
    assert obj["status"]["recentIncidents"] == []


@contextlib.contextmanager
def traffic(cache: Cache) -> Iterator[None]:
    """~500 gets a second, 90 % misses, while the block runs: real traffic over rounds."""
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            cache.gets(hits=25, misses=225)
            stop.wait(0.5)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    try:
        yield
    finally:
        stop.set()
        worker.join(timeout=10)


def _time(event: dict[str, Any]) -> datetime:
    when = parse_rfc3339(event.get("lastTimestamp") or event.get("eventTime"))
    assert when is not None, event
    return when


def test_low_hit_ratio_under_real_traffic_opens_p3_damped_and_reopened(
    namespace: str, run_operator: Callable[..., kit.OperatorProcess], cache: Cache
) -> None:
    kit.apply(policy("traffic", namespace, cache.address))
    run_operator(namespace)
    wait_condition(namespace, "traffic", "Healthy", "True")

    with traffic(cache):
        obj = wait_condition(namespace, "traffic", "IncidentOpen", "True", "P3Medium")
    incident = obj["status"]["incident"]
    assert incident["rootCause"] == "cache" and incident["severity"] == "P3", incident
    check = obj["status"]["checks"][0]
    assert (check["state"], check["reason"]) == ("Critical", "HitRatioLow"), check
    # The finding names the judged sample (the measurements are the last probe's).
    judged = re.search(r"hit ratio ([0-9.]+)% below 50% \(([0-9]+) gets\)", check["message"])
    assert judged is not None, check
    assert float(judged.group(1)) < 50 and int(judged.group(2)) >= 100, check

    # No more traffic: nothing to judge, and the incident resolves after two quiet rounds,
    # ending at the first of them (a round before the IncidentResolved Event).
    obj = wait_condition(namespace, "traffic", "IncidentOpen", "False", "NoIncident")
    recent = obj["status"]["recentIncidents"]
    assert len(recent) == 1 and recent[0]["id"] == incident["id"], recent
    assert recent[0]["rootCause"] == "cache" and recent[0]["severity"] == "P3"
    resolved = kit.wait_until(
        "the IncidentResolved Event",
        lambda: [
            e for e in kit.events_for(namespace, "traffic") if e["reason"] == "IncidentResolved"
        ],
    )
    ended = parse_rfc3339(recent[0]["endedAt"])
    assert ended is not None and (_time(resolved[0]) - ended).total_seconds() >= 1, (
        resolved[0],
        recent[0],
    )

    # The same trouble back within reopenWithin (5m): the same incident, re-opened.
    with traffic(cache):
        obj = wait_condition(namespace, "traffic", "IncidentOpen", "True", "P3Medium")
    again = obj["status"]["incident"]
    assert again["id"] == incident["id"] and again["startedAt"] == incident["startedAt"], again
    assert obj["status"]["recentIncidents"] == []
    messages = kit.wait_until(
        "the re-opening Event",
        lambda: len(m := [e["message"] for e in opened(namespace, "traffic")]) == 2 and m,
    )
    assert any("INCIDENT REOPENED - P3" in m and "reopened 1 time(s)" in m for m in messages), (
        messages
    )
    obj = wait_condition(namespace, "traffic", "IncidentOpen", "False", "NoIncident")
    assert [r["id"] for r in obj["status"]["recentIncidents"]] == [incident["id"]]


def test_cache_restart_opens_no_incident(
    namespace: str, run_operator: Callable[..., kit.OperatorProcess], cache: Cache
) -> None:
    """A restarted cache's counters start again from zero. Before the minimum sample its
    since-start ratio (here 33 % on 3 gets) was judged every round and opened a P3."""
    cache.gets(hits=900, misses=100)
    kit.apply(policy("restart", namespace, cache.address, failureThreshold=3))
    op = run_operator(namespace)
    wait_condition(namespace, "restart", "Healthy", "True")
    wait_rounds(op, namespace, "restart", 1)

    cache.stop()
    started = time.monotonic()
    cache.start()
    assert time.monotonic() - started < 2, "the restart took longer than a round"
    cache.gets(hits=1, misses=2)

    wait_rounds(op, namespace, "restart", 5)
    obj = get(namespace, "restart")
    assert kit.condition(obj, "IncidentOpen")["reason"] == "NoIncident"  # type: ignore[index]
    check = obj["status"]["checks"][0]
    assert check["state"] == "Healthy", check
    assert opened(namespace, "restart") == []
