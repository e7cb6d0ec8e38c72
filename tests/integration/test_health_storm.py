"""A storm on a real cluster: one slow target shared by four HealthPolicies (issue 26).

The target is a real HTTP server on 127.0.0.1 behind the benchmark's slow TCP proxy
(benchmarks/slow_proxy.py); the operator is the real one under its ServiceAccount. While
the proxy holds every answer past the probes' timeout, every policy must show the outage
(the operator is idle: a slow target is the target's fault, not discounted), and the
namespace must get one ``TargetFailing`` Event naming the shared target; when the proxy is
fast again, every policy recovers and one ``TargetRecovered`` Event follows. From the third
policy on, the policies' own Events about the target are folded into those (their status
still tells each one's story), and the closing ``TargetFailing`` Event counts them; their
incidents are recorded on one Incident, the first policy's, which lists them (``grouped``).
"""

from __future__ import annotations

import json
import re
import signal
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from benchmarks.slow_proxy import SlowProxy

from tests.integration import kit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

POLICIES = 4
INTERVAL, TIMEOUT = 3, 2  # seconds; the proxy's delay (4 s) is beyond the timeout
FOLDED = re.compile(r"; (\d+) of their own Events folded into this one")


class _Ok(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


@pytest.fixture
def slow_target() -> Iterator[SlowProxy]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with SlowProxy("127.0.0.1", server.server_port) as proxy:
            yield proxy
    finally:
        server.shutdown()
        server.server_close()


def _policy(name: str, url: str) -> dict[str, Any]:
    return {
        "apiVersion": "ops.stronghold.io/v1alpha1",
        "kind": "HealthPolicy",
        "metadata": {"name": name},
        "spec": {
            "interval": f"{INTERVAL}s",
            "timeout": f"{TIMEOUT}s",
            "failureThreshold": 1,
            "checks": [{"name": "web", "http": {"url": f"{url}/"}}],
        },
    }


def _policies(ns: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kit.kubectl_json("get", "healthpolicies", "-n", ns)["items"]
    return items


def _all(ns: str, status: str) -> list[dict[str, Any]] | None:
    items = _policies(ns)
    ok = len(items) == POLICIES and all(
        (kit.condition(p, "Healthy") or {}).get("status") == status for p in items
    )
    return items if ok else None


def _events(ns: str, reason: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kit.kubectl_json("get", "events", "-n", ns)["items"]
    return [e for e in items if e.get("reason") == reason]


def _metrics(op: kit.OperatorProcess) -> dict[str, str]:
    url = f"http://127.0.0.1:{op.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=15) as resp:
        text = resp.read().decode()
    return dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )


def test_one_slow_target_for_many_policies_is_one_finding(
    namespace: str,
    run_operator: Callable[..., kit.OperatorProcess],
    slow_target: SlowProxy,
) -> None:
    for i in range(POLICIES):
        kit.apply_in(namespace, _policy(f"p{i}", slow_target.url))
    op = run_operator(namespace)
    kit.wait_until("every policy Healthy", lambda: _all(namespace, "True"), timeout=120)

    slow_target.delay = TIMEOUT + 2.0
    down = kit.wait_until(
        "every policy showing the outage", lambda: _all(namespace, "False"), timeout=60
    )
    for p in down:
        web = p["status"]["checks"][0]
        assert web["state"] == "Critical" and web["reason"] == "Timeout", web
        # The operator is idle: a slow target is the target's fault, judged as always.
        assert (kit.condition(p, "Ready") or {}).get("reason") == "Reconciled", p["status"]
    failing = kit.wait_until(
        "one TargetFailing Event", lambda: _events(namespace, "TargetFailing"), timeout=30
    )
    target = slow_target.url
    assert len(failing) == 1, failing
    event = failing[0]
    assert event["type"] == "Warning"
    assert event["involvedObject"]["kind"] == "HealthPolicy"
    assert event["involvedObject"]["name"] in {f"p{i}" for i in range(POLICIES)}
    assert event["message"].startswith(f"{target}: failing for 3 HealthPolicies so far (")

    slow_target.delay = 0.0
    kit.wait_until("every policy recovered", lambda: _all(namespace, "True"), timeout=60)
    recovered = kit.wait_until(
        "one TargetRecovered Event", lambda: _events(namespace, "TargetRecovered"), timeout=30
    )
    assert [e["type"] for e in recovered] == ["Normal"]
    assert recovered[0]["message"].startswith(f"{target}: recovered for 3 HealthPolicies")
    assert len(_events(namespace, "TargetFailing")) == 1  # the window's closing count: later

    # Every policy's status told its own story (an incident opened and resolved), but only
    # the first two policies, before the storm was known, posted their own Events about it.
    kit.wait_until(
        "every policy's incident resolved in its status",
        lambda: all(p["status"].get("recentIncidents") for p in _policies(namespace)),
        timeout=30,
    )
    # One Incident for the shared cause: the first two policies' own (before the storm was
    # known); the later ones' incidents are grouped on the first one's, which counts them.
    incidents = kit.kubectl_json("get", "incidents", "-n", namespace)["items"]
    assert len(incidents) == 2, [i["metadata"]["name"] for i in incidents]
    leads = [i for i in incidents if (i.get("status") or {}).get("grouped")]
    assert len(leads) == 1, [i.get("status") for i in incidents]
    lead = leads[0]
    grouped = lead["status"]["grouped"]
    assert grouped["target"] == target and grouped["count"] == POLICIES - 2, grouped
    last = {p["metadata"]["name"]: p["status"]["recentIncidents"][0] for p in _policies(namespace)}
    members = {name for name, inc in last.items() if inc.get("grouped")}
    assert len(members) == POLICIES - 2, last
    assert {f"{namespace}/{m}" for m in members} == set(grouped["policies"]), (members, grouped)
    assert all(last[m]["incidentName"] == lead["metadata"]["name"] for m in members), last
    for reason in ("IncidentOpened", "IncidentResolved"):
        for kind in ("HealthPolicy", "Incident"):  # the policy's Event, its Incident's
            told = {
                e["involvedObject"]["name"]
                for e in _events(namespace, reason)
                if e["involvedObject"]["kind"] == kind
            }
            assert len(told) <= 2, (reason, kind, told)
    closing = kit.wait_until(
        "the closing TargetFailing Event with the folded count",
        lambda: [e for e in _events(namespace, "TargetFailing") if FOLDED.search(e["message"])],
        timeout=90,
    )
    message = closing[0]["message"]
    assert message.startswith(f"{target}: failing for {POLICIES} HealthPolicies within 60s")
    found = FOLDED.search(message)
    assert found is not None and int(found.group(1)) >= 2, message

    # The operator's own load is on /metrics: the loop lag was measured, no overload seen.
    lines = _metrics(op)
    assert float(lines['stronghold_events_dropped_total{why="shared"}']) >= 2
    assert float(lines["stronghold_event_loop_lag_seconds_count"]) > 0
    assert float(lines["stronghold_operator_overloaded"]) == 0.0
    assert float(lines["stronghold_health_checks_discounted_total"]) == 0.0
    assert "Traceback" not in op.logs(), json.dumps(op.logs()[-2000:])


def test_timeouts_while_the_operator_itself_was_stalled_are_not_held_against_the_target(
    namespace: str,
    run_operator: Callable[..., kit.OperatorProcess],
    slow_target: SlowProxy,
) -> None:
    """The operator's process is really stopped (SIGSTOP: what a starved CPU or a paused VM
    does to it) for longer than two intervals while the target turns slow. The rounds
    that were due meanwhile start late, the probes in flight saw the stall: their timeouts
    are not counted (the overload gauge and counter say so); the rounds after it, on time,
    judge the same slow target Critical."""
    for i in range(POLICIES):
        kit.apply_in(namespace, _policy(f"p{i}", slow_target.url))
    op = run_operator(namespace)
    kit.wait_until("every policy Healthy", lambda: _all(namespace, "True"), timeout=120)
    assert float(_metrics(op)["stronghold_health_checks_discounted_total"]) == 0.0

    slow_target.delay = TIMEOUT + 2.0
    op.proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(2 * INTERVAL)  # the stall itself: this is what is measured
    finally:
        op.proc.send_signal(signal.SIGCONT)

    def discounted() -> float | None:
        value = float(_metrics(op)["stronghold_health_checks_discounted_total"])
        return value if value > 0 else None

    kit.wait_until("late rounds' timeouts discounted", discounted, timeout=30)
    lines = _metrics(op)
    assert float(lines["stronghold_operator_overloaded"]) == 1.0
    # The stall itself is in the lag histogram: a wake-up more than 5 s late.
    assert float(lines['stronghold_event_loop_lag_seconds_bucket{le="5.0"}']) < float(
        lines["stronghold_event_loop_lag_seconds_count"]
    )
    # On-time rounds afterwards judge the slow target: every policy shows the outage.
    down = kit.wait_until(
        "every policy showing the outage", lambda: _all(namespace, "False"), timeout=60
    )
    assert all(p["status"]["checks"][0]["reason"] == "Timeout" for p in down)
