"""History on the testbed's real Prometheus (``stronghold-testbed services up``): it scrapes
this test's real operator, found through a file_sd targets file, while the operator probes
real PostgreSQL, RabbitMQ and Memcached for a HealthPolicy and decides for a ScalingPolicy.
Every metric the Grafana dashboard queries is in that scrape, and every rule of
manifests/monitoring evaluates on it.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pytest

from stronghold_operator.models.outbound import ALLOWED_DESTINATIONS
from stronghold_testbed import prometheus
from tests.integration import health_kit as hk
from tests.integration import kit
from tests.support import promql, workloads

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MESSAGES = 7  # left ready in this test's queue: its depth
# The series this test's HealthPolicy feeds: they must carry samples, not only metadata.
FED = {
    "stronghold_health_db_size_bytes",
    "stronghold_health_db_connections_used",
    "stronghold_health_db_max_connections",
    "stronghold_health_queue_depth",
    "stronghold_health_probe_success",
    "stronghold_health_probe_duration_seconds_count",
    "stronghold_health_incident_severity",
    "stronghold_api_writes_total",
    "stronghold_scaling_replicas",
    "stronghold_scaling_decisions_total",
}
MAX_REPLICAS = 4


def api(path: str, **params: str) -> Any:
    url = f"{prometheus.URL}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=15) as resp:
            body = json.load(resp)
    except urllib.error.HTTPError as exc:  # 400/422: a query Prometheus refused
        body = json.load(exc)
    assert body["status"] == "success", f"{path} {params}: {body}"
    return body["data"]


def query(expr: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = api("query", query=expr)["result"]
    return result


@pytest.fixture
def prom(testbed: Any) -> str:
    """The testbed's Prometheus, which the session's ``services up`` started or reloaded."""
    try:
        with urllib.request.urlopen(f"{prometheus.URL}/-/ready", timeout=5) as resp:
            assert resp.status == 200
    except OSError as exc:
        pytest.fail(
            f"the testbed's Prometheus does not answer on {prometheus.URL} ({exc}): "
            "run `stronghold-testbed services up`",
            pytrace=False,
        )
    return prometheus.URL


@pytest.fixture
def queue() -> Iterator[str]:
    """A queue of this test's own with MESSAGES ready messages."""
    hk.require("RabbitMQ", 5672)
    name = f"hist-{uuid.uuid4().hex[:8]}"
    conn = pika.BlockingConnection(pika.URLParameters(hk.AMQP))
    ch = conn.channel()
    ch.queue_declare(name)
    for i in range(MESSAGES):
        ch.basic_publish("", name, f"m{i}".encode())
    yield name
    ch.queue_delete(name)
    conn.close()


@pytest.fixture
def scraped(
    prom: str,
    namespace: str,
    run_operator: Callable[..., kit.OperatorProcess],
    queue: str,
) -> Iterator[str]:
    """This test's operator, probing real services every 2 s, as a Prometheus target; its
    ``instance`` label."""
    hk.require("PostgreSQL", 5432)
    hk.require("Memcached", 11211)
    kit.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "mq",
                "namespace": namespace,
                "annotations": {ALLOWED_DESTINATIONS: "127.0.0.1:5672"},
            },
            "stringData": {"url": hk.AMQP},
        }
    )
    kit.apply(
        {
            "apiVersion": "ops.stronghold.io/v1alpha1",
            "kind": "HealthPolicy",
            "metadata": {"name": "platform", "namespace": namespace},
            "spec": {
                "interval": "2s",
                "checks": [
                    # Other test files share these servers: their load is not this test's.
                    {
                        "name": "db",
                        "postgres": {"host": "127.0.0.1", "maxBlockedSessions": 1000},
                    },
                    {
                        "name": "cache",
                        "memcached": {
                            "address": hk.MEMCACHED,
                            "hitRatio": {"warningBelow": 0, "criticalBelow": 0},
                        },
                    },
                    {
                        "name": "queue",
                        "rabbitmq": {
                            "url": {"secretKeyRef": {"name": "mq", "key": "url"}},
                            "queues": [{"name": queue}],
                        },
                    },
                ],
            },
        }
    )
    # The web tier: one replica under a dry-run ScalingPolicy (it decides, never scales).
    kit.apply_in(namespace, workloads.busybox_deployment("web", resources=workloads.SMALL))
    kit.apply(
        {
            "apiVersion": "ops.stronghold.io/v1alpha1",
            "kind": "ScalingPolicy",
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {
                "targetRef": {"kind": "Deployment", "name": "web"},
                "maxReplicas": MAX_REPLICAS,
                "interval": "2s",
                "dryRun": True,
            },
        }
    )
    op = run_operator(namespace)
    instance = f"127.0.0.1:{op.metrics_port}"
    prometheus.write_targets(f"test-{namespace}", [instance], {"test_namespace": namespace})
    try:
        kit.wait_until(
            "Prometheus scraping this test's operator, with its policy's database size",
            lambda: query(f'stronghold_health_db_size_bytes{{instance="{instance}"}}'),
            timeout=90,
        )
        yield instance
    finally:
        prometheus.remove_targets(f"test-{namespace}")


def test_every_metric_the_dashboard_queries_is_in_the_real_scrape(scraped: str) -> None:
    """Read the names out of each panel's PromQL (a real parser), follow recording rules to
    what they read, and find each in the operator's scrape: a family the scrape declared
    (metadata: a counter without increments yet is declared, with no sample), and the series
    this test's policy feeds with samples of this operator."""
    match = f'{{instance="{scraped}"}}'
    families = {m["metric"] for m in api("targets/metadata", match_target=match)}
    with_samples = set(api("label/__name__/values", **{"match[]": match}))
    assert not FED - with_samples, f"no samples: {FED - with_samples}"
    recorded = promql.recording_rules()
    checked: set[str] = set()
    missing: list[str] = []
    for where, expr in promql.dashboard_queries():
        for metric in promql.source_metrics(expr, recorded):
            found = metric in with_samples or promql.family(metric, families)
            if not found:
                missing.append(f"{where}: {metric}")
            checked.add(metric)
    assert not missing, "not in the operator's scrape:\n" + "\n".join(missing)
    assert len(checked) > 30  # the dashboard reads most of the operator's metrics
    # And each runs on the real Prometheus as Grafana sends it (all namespaces selected).
    for where, expr in promql.dashboard_queries():
        sent = promql.grafana_to_promql(expr).replace("$namespace", ".*")
        assert "$" not in sent, where
        try:
            query(sent)
        except AssertionError as exc:
            raise AssertionError(f"{where}: {exc}") from None


def test_every_rule_evaluates_on_the_real_prometheus(scraped: str, namespace: str) -> None:
    """Each recording and alerting expression runs without error; the capacity series this
    policy feeds are recorded for its namespace (by the rules the testbed loaded, which are
    this tree's), with the values the services have."""
    rules = {**promql.recording_rules(), **promql.alerting_rules()}
    for expr in rules.values():
        query(expr)  # asserts status success

    # The loaded rules are this tree's (services up copied them and reloaded Prometheus).
    def loaded() -> dict[str, str] | None:
        got = {
            r["name"]: r["health"]
            for g in api("rules")["groups"]
            if g["name"].startswith("stronghold.")
            for r in g["rules"]
        }
        return got if set(got) == set(rules) else None

    health = kit.wait_until("the testbed Prometheus to load this tree's rules", loaded, 30)
    assert set(health.values()) <= {"ok", "unknown"}, health
    ns = f'namespace="{namespace}"'

    def recorded() -> dict[str, float] | None:
        out = {}
        for name in (
            "stronghold:db_size_bytes:max",
            "stronghold:db_connections_used:ratio",
            "stronghold:queue_depth:max",
            "stronghold:scaling_replicas:ratio_of_max",
        ):
            result = query(f"{name}{{{ns}}}")
            if not result:
                return None
            out[name] = float(result[0]["value"][1])
        return out

    values = kit.wait_until("the capacity rules recording this policy", recorded, timeout=60)
    size = float(
        query(f'stronghold_health_db_size_bytes{{{ns},instance="{scraped}"}}')[0]["value"][1]
    )
    assert values["stronghold:db_size_bytes:max"] > 1_000_000  # a real database's size
    assert abs(values["stronghold:db_size_bytes:max"] - size) / size < 0.05
    assert 0 < values["stronghold:db_connections_used:ratio"] <= 1
    assert values["stronghold:queue_depth:max"] == MESSAGES
    assert values["stronghold:scaling_replicas:ratio_of_max"] == 1 / MAX_REPLICAS
    # Recorded without job/instance: history continues when the operator moves.
    (series,) = query(f"stronghold:queue_depth:max{{{ns}}}")
    assert "instance" not in series["metric"] and series["metric"]["queue"].startswith("hist-")
