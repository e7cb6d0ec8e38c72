"""Escalation routes with the real operator on the local cluster (docs/incidents.md#escalation).

A check that keeps failing (the test's own endpoint answering 503); each level its own receiver
on a real local HTTP server (the test's own, 127.0.0.1): level 2 (Alertmanager format with
its team label), then level 3, with an operator restart between them that must not send
level 2 again (the level reached is kept in status); acknowledged, no level 4 ever.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from stronghold_operator import conditions as cond
from tests.integration import health_kit as hk
from tests.integration import kit
from tests.integration.test_incident_e2e import incidents, probes_of
from tests.integration.test_remediation_e2e import apply_policy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

LEVEL4_AFTER_S = 40


@pytest.fixture(autouse=True)
def kinds(apply_crds: list[str]) -> None:
    kit.apply_crds()
    kit.kubectl("apply", "-k", str(kit.REPO / "manifests/rbac/cluster"))


class _Unavailable(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def failing_web() -> Iterator[str]:
    """The test's own web endpoint that answers 503 (answered probes: countable rounds)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/health/"
    server.shutdown()
    server.server_close()


@pytest.fixture
def receiver() -> Iterator[hk.Receiver]:
    r = hk.Receiver()
    yield r
    r.close()


def posts(r: hk.Receiver, path: str) -> list[Any]:
    return [x["body"] for x in r.received if x["path"] == path]


def test_levels_reach_their_receivers_once_across_a_restart_and_ack_stops_them(
    namespace: str,
    run_operator: Callable[..., kit.OperatorProcess],
    receiver: hk.Receiver,
    failing_web: str,
) -> None:
    ns = namespace
    base = receiver.url.rsplit("/", 1)[0]
    op = run_operator(ns)  # first: it takes the spec from the watch event at once
    apply_policy(
        ns,
        {
            "apiVersion": "ops.stronghold.io/v1alpha1",
            "kind": "HealthPolicy",
            "metadata": {"name": "stack"},
            "spec": {
                "interval": "2s",
                "timeout": "1s",
                "failureThreshold": 1,
                "checks": [{"name": "web", "http": {"url": failing_web}}],
                "alerting": {
                    "escalation": [
                        {
                            "after": "4s",
                            "level": 2,
                            "webhook": {
                                "url": f"{base}/l2",
                                "format": "alertmanager",
                                "labels": {"team": "seniors"},
                            },
                        },
                        {"after": "12s", "level": 3, "webhook": {"url": f"{base}/l3"}},
                        {
                            "after": f"{LEVEL4_AFTER_S}s",
                            "level": 4,
                            "webhook": {"url": f"{base}/l4"},
                        },
                    ]
                },
            },
        },
        lambda spec: "labels" in spec["alerting"]["escalation"][0]["webhook"],
    )

    (l2,) = kit.wait_until("level 2 at its receiver", lambda: posts(receiver, "/l2"), 90)
    (alert,) = l2
    assert alert["labels"]["team"] == "seniors" and alert["labels"]["healthpolicy"] == "stack"
    assert alert["annotations"]["escalation_level"] == "2"
    assert posts(receiver, "/l3") == []  # not before its time
    kit.wait_until(
        "level 2 kept in the policy's status",
        lambda: kit.get(ns, "healthpolicy", "stack")["status"]["incident"]["escalationLevel"] == 2,
    )

    # The operator restarts between the levels: level 2 is not sent again.
    op.kill(sig=15)
    op = run_operator(ns)
    (l3,) = kit.wait_until("level 3 at its receiver", lambda: posts(receiver, "/l3"), 90)
    assert l3["event"] == "Escalated" and l3["escalationLevel"] == 3
    assert len(posts(receiver, "/l2")) == 1

    (inc,) = incidents(ns)
    name = inc["metadata"]["name"]
    started = cond.parse_rfc3339(inc["status"]["startedAt"])
    assert started is not None
    assert datetime.now(UTC) - started < timedelta(seconds=LEVEL4_AFTER_S - 5), "too slow to ack"
    kit.kubectl("annotate", "incident", name, "-n", ns, "ops.stronghold.io/ack=carol")
    kit.wait_until(
        "the policy honouring the acknowledgement",
        lambda: (
            kit.get(ns, "healthpolicy", "stack")["status"]["incident"].get("acknowledgedBy")
            == "carol"
        ),
        timeout=30,
    )

    # Past level 4's time, and a few rounds more: no level 4.
    kit.wait_until(
        "level 4's time passed",
        lambda: datetime.now(UTC) - started > timedelta(seconds=LEVEL4_AFTER_S + 2),
        timeout=LEVEL4_AFTER_S + 30,
    )
    seen = probes_of(op, ns, "stack")
    kit.wait_until("three more rounds", lambda: probes_of(op, ns, "stack") >= seen + 3, 60)
    assert posts(receiver, "/l4") == []
    inc = kit.get(ns, "incident", name)
    assert inc["status"]["state"] == "Acknowledged" and inc["status"]["escalationLevel"] == 3
    escalations = [e for e in inc["status"]["timeline"] if e["type"] == "Escalated"]
    assert [e["message"].rsplit(" ", 1)[-1] for e in escalations] == ["2", "3"]
    reasons = [e["reason"] for e in kit.events_for(ns, name)]
    assert reasons.count("IncidentEscalated") == 2
