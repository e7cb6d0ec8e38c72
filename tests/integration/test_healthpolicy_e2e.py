"""HealthPolicy with the real operator on the local cluster, against real services.

Incident lifecycle (open -> escalate -> resolve) with a database that really goes away (a TCP
forwarder in front of PostgreSQL is stopped), Events, dependency-aware root cause, the
maintenance annotation, a webhook received by a real local HTTP receiver, bad input, and a
known password that must never appear in status, Events, logs or webhook bodies.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from stronghold_operator.models.outbound import ALLOWED_DESTINATIONS
from tests.integration import health_kit as hk
from tests.integration import kit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MAINTENANCE = "ops.stronghold.io/maintenance"


@pytest.fixture
def receiver() -> Iterator[hk.Receiver]:
    r = hk.Receiver()
    yield r
    r.close()


@pytest.fixture
def pg_proxy() -> Iterator[hk.TcpProxy]:
    hk.require("PostgreSQL", 5432)
    proxy = hk.TcpProxy(5432)
    proxy.start()
    yield proxy
    proxy.stop()


def policy(name: str, namespace: str, spec: dict[str, Any], **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "ops.stronghold.io/v1alpha1",
        "kind": "HealthPolicy",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": spec,
    }


def secret(
    namespace: str, name: str, data: dict[str, str], destinations: str | None = None
) -> dict[str, Any]:
    """A Secret; ``destinations``: where its owner allows the operator to send it."""
    annotations = {ALLOWED_DESTINATIONS: destinations} if destinations else {}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "stringData": data,
    }


def get(namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = kit.kubectl_json("get", "healthpolicy", name, "-n", namespace)
    return obj


def wait_condition(
    namespace: str,
    name: str,
    type_: str,
    status: str,
    reason: str | None = None,
    timeout: float = 60,
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = get(namespace, name)
        c = kit.condition(obj, type_)
        if c and c["status"] == status and (reason is None or c["reason"] == reason):
            return obj
        return None

    try:
        return kit.wait_until(f"{name}: {type_}={status} {reason or ''}", probe, timeout=timeout)
    except AssertionError as exc:
        conditions = get(namespace, name).get("status", {}).get("conditions")
        raise AssertionError(f"{exc}; conditions now: {conditions}") from None


def event_reasons(namespace: str, name: str) -> list[str]:
    return [e["reason"] for e in kit.events_for(namespace, name)]


def patch_spec(namespace: str, name: str, spec: dict[str, Any]) -> None:
    kit.kubectl(
        "patch",
        "healthpolicy",
        name,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": spec}),
    )


def test_incident_lifecycle_root_cause_webhook_and_no_secret_leaks(
    namespace: str,
    run_operator: Callable[..., kit.OperatorProcess],
    receiver: hk.Receiver,
    pg_proxy: hk.TcpProxy,
) -> None:
    password = f"known-pw-{uuid.uuid4().hex}"
    token = f"Bearer known-token-{uuid.uuid4().hex}"
    allowed = f"127.0.0.1:{pg_proxy.port},127.0.0.1:{receiver.server.server_port}"
    kit.apply(secret(namespace, "db", {"password": password, "token": token}, allowed))
    dsn = f"host=127.0.0.1 port={pg_proxy.port} user=postgres dbname=postgres connect_timeout=2"
    with hk.webapp("--pg-dsn", dsn, "--memcached", hk.MEMCACHED) as app:
        spec = {
            "interval": "2s",
            "timeout": "2s",
            # Two rounds: other test files load the shared PostgreSQL (60 CREATE DATABASEs,
            # restores), and one slow answer must not open an incident before the outage.
            "failureThreshold": 2,
            "checks": [
                {"name": "web", "http": {"url": f"{app}/health/", "healthDocument": {}}},
                {
                    "name": "db",
                    "postgres": {
                        "host": "127.0.0.1",
                        "port": pg_proxy.port,
                        "password": {"secretKeyRef": {"name": "db", "key": "password"}},
                        # Other test files share this server: their lock waits are not this
                        # test's subject (they opened a second, P2 incident here).
                        "maxBlockedSessions": 1000,
                    },
                },
                {
                    "name": "cache",
                    # The shared Memcached's hit ratio depends on other tests' traffic.
                    "memcached": {
                        "address": hk.MEMCACHED,
                        "hitRatio": {"warningBelow": 0, "criticalBelow": 0},
                    },
                },
            ],
            "alerting": {
                "webhook": {
                    "url": receiver.url,
                    "authorization": {"secretKeyRef": {"name": "db", "key": "token"}},
                    "timeout": "2s",
                },
                "escalation": [{"after": "6s", "level": 2}],
            },
        }
        kit.apply(policy("stack", namespace, spec))
        op = run_operator(namespace)
        obj = wait_condition(namespace, "stack", "Healthy", "True")
        assert kit.condition(obj, "Ready")["status"] == "True"  # type: ignore[index]
        assert obj["status"]["severity"] == "None", obj["status"].get("incident")
        assert [c["state"] for c in obj["status"]["checks"]] == ["Healthy"] * 3

        pg_proxy.stop()  # the database goes away for the probe and for the web app
        obj = wait_condition(namespace, "stack", "IncidentOpen", "True", "P1Critical")
        incident = obj["status"]["incident"]
        assert incident["rootCause"] == "db", incident
        assert "also affected: web" in incident["summary"]
        assert kit.condition(obj, "Healthy")["reason"] == "Unreachable"  # type: ignore[index]
        web = obj["status"]["checks"][0]
        assert web["measurements"]["urls"][0]["components"]["database"] == "disconnected"

        obj = kit.wait_until(
            "escalation to level 2",
            lambda: (
                (o := get(namespace, "stack"))["status"].get("incident", {}).get("escalationLevel")
                == 2
                and o
            ),
            timeout=30,
        )
        pg_proxy.start()
        obj = wait_condition(namespace, "stack", "IncidentOpen", "False", "NoIncident")
        recent = obj["status"]["recentIncidents"][0]
        assert recent["rootCause"] == "db" and recent["severity"] == "P1"
        assert recent["id"] == incident["id"] and recent["durationSeconds"] >= 6

    def incident_events() -> list[str] | None:
        r = event_reasons(namespace, "stack")
        wanted = {"IncidentOpened", "IncidentEscalated", "IncidentResolved"}
        return r if wanted <= set(r) else None

    reasons = kit.wait_until("the incident Events", incident_events)
    assert reasons.count("IncidentOpened") == 1  # one incident, not one per failing check
    resolved = [e for e in kit.events_for(namespace, "stack") if e["reason"] == "IncidentResolved"]
    assert "INCIDENT RESOLVED - Duration:" in resolved[0]["message"]

    kit.wait_until(
        "the webhooks",
        lambda: receiver.events("stack")[:3] == ["Opened", "Escalated", "Resolved"],
        timeout=30,
    )
    opened = receiver.received[0]
    assert opened["headers"]["authorization"] == token
    assert opened["body"]["incident"]["rootCause"] == "db"
    assert opened["body"]["incident"]["severity"] == "P1"

    # The known password and token never appear in status, Events, logs or webhook bodies.
    status_text = json.dumps(get(namespace, "stack")["status"])
    events_text = json.dumps(kit.events_for(namespace, "stack"))
    for value in (password, token):
        assert value not in status_text
        assert value not in events_text
        assert value not in op.logs()
        assert all(value not in r["raw"] for r in receiver.received)

    # Prometheus metrics on the operator's /metrics.
    with urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=10) as r:
        metrics = r.read().decode()
    assert f'stronghold_health_incident_severity{{namespace="{namespace}",policy="stack"}} 0.0' in (
        metrics
    )
    assert "stronghold_health_probe_duration_seconds_count" in metrics
    assert "stronghold_health_db_connections_percent" in metrics


def test_maintenance_marks_incident_expected_and_sends_no_webhook(
    namespace: str,
    run_operator: Callable[..., kit.OperatorProcess],
    receiver: hk.Receiver,
) -> None:
    spec = {
        "interval": "2s",
        "timeout": "1s",
        "failureThreshold": 1,
        "checks": [{"name": "web", "http": {"url": f"http://127.0.0.1:{hk.closed_port()}/"}}],
        "alerting": {"webhook": {"url": receiver.url, "timeout": "2s"}},
    }
    kit.apply(policy("maint", namespace, spec, **{MAINTENANCE: "weekly-db"}))
    run_operator(namespace)
    obj = wait_condition(namespace, "maint", "IncidentOpen", "True", "MaintenanceInProgress")
    incident = obj["status"]["incident"]
    assert incident["expected"] is True and incident["maintenanceWindow"] == "weekly-db"
    assert incident["severity"] == "P1" and incident["rootCause"] == "web"
    opened = kit.wait_until(
        "the IncidentOpened Event",
        lambda: [e for e in kit.events_for(namespace, "maint") if e["reason"] == "IncidentOpened"],
    )
    assert opened[0]["type"] == "Normal" and "expected" in opened[0]["message"]
    assert receiver.events("maint") == []

    # The window ends with the incident still open: now the webhook is sent.
    kit.kubectl("annotate", "healthpolicy", "maint", "-n", namespace, f"{MAINTENANCE}-")
    wait_condition(namespace, "maint", "IncidentOpen", "True", "P1Critical")
    kit.wait_until("the webhook after maintenance", lambda: receiver.events("maint") == ["Opened"])


BAD_FOR_APISERVER: list[tuple[str, dict[str, Any]]] = [
    (
        "interval not a duration",
        {"interval": "soon", "checks": [{"name": "w", "http": {"url": "http://w/"}}]},
    ),
    ("no checks", {"checks": []}),
    (
        "two probe types",
        {
            "checks": [
                {"name": "w", "http": {"url": "http://w/"}, "memcached": {"address": "c:11211"}}
            ]
        },
    ),
    ("upper-case check name", {"checks": [{"name": "Web", "http": {"url": "http://w/"}}]}),
    ("ftp url", {"checks": [{"name": "w", "http": {"url": "ftp://w/"}}]}),
    (
        "severity P0",
        {
            "checks": [{"name": "w", "http": {"url": "http://w/"}}],
            "incidentRules": {"rules": [{"severity": "P0", "findings": ["Timeout"]}]},
        },
    ),
    (
        "threshold 0",
        {"failureThreshold": 0, "checks": [{"name": "w", "http": {"url": "http://w/"}}]},
    ),
    ("memcached without port", {"checks": [{"name": "c", "memcached": {"address": "cache"}}]}),
]


@pytest.mark.parametrize(("what", "spec"), BAD_FOR_APISERVER, ids=[b[0] for b in BAD_FOR_APISERVER])
def test_apiserver_rejects(
    what: str, spec: dict[str, Any], namespace: str, apply_crds: Any
) -> None:
    out = kit.kubectl(
        "apply", "-f", "-", input=json.dumps(policy("bad", namespace, spec)), check=False
    )
    assert "Invalid" in out or "invalid" in out, f"{what} was accepted: {out}"


def test_operator_reports_invalid_spec_and_missing_secret(
    namespace: str, run_operator: Callable[..., kit.OperatorProcess]
) -> None:
    web = {"name": "w", "http": {"url": "http://127.0.0.1:1/"}}
    cases = {
        "metadata-url": (
            {"checks": [{"name": "w", "http": {"url": "http://169.254.169.254/latest/"}}]},
            "spec.checks[0].http",
        ),
        "bands-reversed": (
            {
                "checks": [
                    {
                        **web,
                        "http": {
                            "url": "http://127.0.0.1:1/",
                            "latency": {"warning": "1s", "critical": "100ms"},
                        },
                    }
                ]
            },
            "spec.checks[0].http.latency",
        ),
        "unknown-dependency": ({"checks": [{**web, "dependsOn": ["db"]}]}, "dependsOn"),
    }
    for name, (spec, _) in cases.items():
        kit.apply(policy(name, namespace, spec))
    missing = {
        "interval": "2s",
        "checks": [
            {
                "name": "db",
                "postgres": {
                    "host": "127.0.0.1",
                    "password": {"secretKeyRef": {"name": "nope", "key": "password"}},
                },
            }
        ],
    }
    kit.apply(policy("missing-secret", namespace, missing))
    # As an earlier version left it: with our finalizer, which this one takes off.
    suspended = policy("suspended", namespace, {"suspend": True, "checks": [web]})
    suspended["metadata"]["finalizers"] = ["ops.stronghold.io/finalizer"]
    kit.apply(suspended)
    run_operator(namespace)
    for name, (_, field) in cases.items():
        obj = wait_condition(namespace, name, "Ready", "False", "InvalidSpec")
        assert field in kit.condition(obj, "Ready")["message"]  # type: ignore[index]
    obj = wait_condition(namespace, "missing-secret", "Ready", "False", "SecretMissing")
    message = kit.condition(obj, "Ready")["message"]  # type: ignore[index]
    assert f"Secret {namespace}/nope not found" in message
    wait_condition(namespace, "suspended", "Ready", "False", "Suspended")
    kit.wait_until(
        "the old finalizer removed",
        lambda: not get(namespace, "suspended")["metadata"].get("finalizers"),
        timeout=30,
    )
    assert not get(namespace, "missing-secret")["metadata"].get("finalizers")
    # Fixing the spec is picked up at once (the change starts a round).
    patch_spec(namespace, "bands-reversed", {"checks": [web]})
    wait_condition(namespace, "bands-reversed", "Ready", "True", timeout=30)
    # ... and so is breaking it again, and fixing it again.
    bad = {"checks": [{**web, "http": {"url": "http://[fe80::1]/"}}]}
    for patch, status in ((bad, "False"), ({"checks": [web]}, "True")):
        patch_spec(namespace, "bands-reversed", patch)
        wait_condition(namespace, "bands-reversed", "Ready", status, timeout=30)
    # No finalizer: a delete completes at once, and the operator just stops probing it.
    kit.kubectl("delete", "healthpolicy", "bands-reversed", "-n", namespace, "--timeout=15s")


def test_an_object_another_finalizer_keeps_does_not_fail_liveness(
    namespace: str, run_operator: Callable[..., kit.OperatorProcess]
) -> None:
    # The stalled-watch check compares a LIST with what the watch delivered. Nothing of ours
    # serves an object once it is being deleted; one that another controller's finalizer
    # keeps must not fail the liveness probe (which would restart the operator for ever).
    kept = policy(
        "kept", namespace, {"checks": [{"name": "w", "http": {"url": "http://127.0.0.1:1/"}}]}
    )
    kept["metadata"]["finalizers"] = ["example.com/keep"]
    kit.apply(kept)
    op = run_operator(namespace, env={"STRONGHOLD_WATCH_GRACE": "2"})
    try:
        wait_condition(namespace, "kept", "Ready", "True", timeout=60)
        kit.kubectl("delete", "healthpolicy", "kept", "-n", namespace, "--wait=false")
        # kopf answers from a result up to 10 s old: the first fresh probe after the
        # deletion starts the grace, the second is past it.
        for _ in range(2):
            time.sleep(11)
            assert op.liveness() == 200, op.logs()[-3000:]
    finally:
        kit.kubectl(
            "patch",
            "healthpolicy",
            "kept",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
            check=False,
        )


def test_a_secret_goes_only_where_the_secret_allows(
    namespace: str,
    run_operator: Callable[..., kit.OperatorProcess],
    receiver: hk.Receiver,
    pg_proxy: hk.TcpProxy,
) -> None:
    """The policy pairs a Secret with targets of its author's choosing; the Secret names
    other destinations: nothing is sent, and status and Events name the field."""
    password = f"pw-{uuid.uuid4().hex}"
    token = f"Bearer token-{uuid.uuid4().hex}"
    data = {"password": password, "token": token}
    kit.apply(secret(namespace, "creds", data, "db.prod.svc:5432,hooks.example.com"))
    ref = {"secretKeyRef": {"name": "creds", "key": "password"}}
    spec = {
        "interval": "2s",
        "timeout": "1s",
        "failureThreshold": 1,
        "checks": [
            {"name": "web", "http": {"url": f"http://127.0.0.1:{hk.closed_port()}/"}},
            {
                "name": "db",
                "postgres": {"host": "127.0.0.1", "port": pg_proxy.port, "password": ref},
            },
        ],
        "alerting": {
            "webhook": {
                "url": receiver.url,
                "authorization": {"secretKeyRef": {"name": "creds", "key": "token"}},
                "timeout": "1s",
            }
        },
    }
    kit.apply(policy("pairing", namespace, spec))
    op = run_operator(namespace)
    obj = wait_condition(namespace, "pairing", "IncidentOpen", "True")
    db = obj["status"]["checks"][1]
    assert (db["state"], db["reason"]) == ("Unknown", "SecretNotAllowed"), db
    assert "spec.checks[1].postgres.password" in db["message"]
    assert ALLOWED_DESTINATIONS in db["message"]

    def refused_webhook() -> list[dict[str, Any]]:
        return [
            e
            for e in kit.events_for(namespace, "pairing")
            if e["reason"] == "WebhookFailed"
            and "spec.alerting.webhook.authorization" in e["message"]
        ]

    kit.wait_until("the refused webhook's Event", refused_webhook, timeout=30)
    assert receiver.received == []  # nothing was sent, not even without the header
    assert pg_proxy.accepted == 0  # the database was never contacted with the password
    text = json.dumps(get(namespace, "pairing")) + json.dumps(kit.events_for(namespace, "pairing"))
    for value in (password, token):
        assert value not in text and value not in op.logs()
