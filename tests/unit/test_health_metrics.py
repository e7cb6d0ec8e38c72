"""The HealthPolicy series on /metrics, assembled at scrape time from each policy's rounds."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from stronghold_operator.controllers.health_metrics import HealthSeries
from stronghold_operator.logic import health as h
from stronghold_operator.probes.base import ProbeResult
from tests.unit.test_health_logic import T0, cache_ok, db_ok, queue_ok, stack, web_ok


def scrape(collector: HealthSeries) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The rendered text as prometheus-client's own parser reads it."""
    text = "".join(collector.render())
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def one_round(collector: HealthSeries, results: dict[str, ProbeResult], uid: str = "u1") -> None:
    policy = stack()
    ev = h.evaluate(policy, "stack", {}, results, None, T0)
    collector.series(uid, "ns", "stack").record(
        policy.checks, results, ev.status["checks"], ev.severity
    )


def labels(check: str, **more: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"namespace": "ns", "policy": "stack", "check": check, **more}.items()))


def test_rounds_become_series_and_durations_add_up() -> None:
    c = HealthSeries()
    ok = {"web": web_ok(20), "db": db_ok(), "cache": cache_ok(), "queue": queue_ok(messages=7)}
    one_round(c, ok)
    one_round(c, {**ok, "web": web_ok(40)})
    got = scrape(c)
    web = labels("web", type="http")
    assert got[("stronghold_health_probe_duration_seconds_count", web)] == 2
    assert abs(got[("stronghold_health_probe_duration_seconds_sum", web)] - 0.060) < 1e-9
    assert got[("stronghold_health_probe_success", labels("web"))] == 1
    assert got[("stronghold_health_db_connections_percent", labels("db"))] == 10
    assert got[("stronghold_health_cache_hit_ratio_percent", labels("cache"))] == 90
    assert got[("stronghold_health_queue_depth", labels("queue", queue="celery"))] == 7
    severity = tuple(sorted({"namespace": "ns", "policy": "stack"}.items()))
    assert got[("stronghold_health_incident_severity", severity)] == 0


def test_database_size_and_connection_counts_are_exported() -> None:
    """The numbers capacity planning trends (docs/capacity.md), beside the percentage."""
    c = HealthSeries()
    one_round(c, {"db": db_ok(dbSizeBytes=123_456_789, connectionsUsed=42, maxConnections=200)})
    got = scrape(c)
    assert got[("stronghold_health_db_size_bytes", labels("db"))] == 123_456_789
    assert got[("stronghold_health_db_connections_used", labels("db"))] == 42
    assert got[("stronghold_health_db_max_connections", labels("db"))] == 200
    one_round(c, {"db": ProbeResult.failed("Unreachable", "connection refused", None)})
    got = scrape(c)
    assert ("stronghold_health_db_size_bytes", labels("db")) not in got
    assert ("stronghold_health_db_connections_used", labels("db")) not in got


def test_a_failed_probe_counts_no_duration_and_drops_its_numbers() -> None:
    c = HealthSeries()
    ok = {"web": web_ok(), "db": db_ok(), "cache": cache_ok(), "queue": queue_ok()}
    one_round(c, ok)
    one_round(c, {**ok, "db": ProbeResult.failed("Unreachable", "connection refused", None)})
    got = scrape(c)
    db = labels("db", type="postgres")
    assert got[("stronghold_health_probe_duration_seconds_count", db)] == 1
    assert got[("stronghold_health_probe_success", labels("db"))] == 0
    assert ("stronghold_health_db_connections_percent", labels("db")) not in got
    severity = tuple(sorted({"namespace": "ns", "policy": "stack"}.items()))
    assert got[("stronghold_health_incident_severity", severity)] == 1  # P1: database down


def test_a_forgotten_policy_leaves_no_series() -> None:
    c = HealthSeries()
    one_round(c, {"web": web_ok()}, uid="gone")
    one_round(c, {"web": web_ok()}, uid="kept")
    c.forget("gone")
    c.policies["kept"].policy = "other"
    assert not any(dict(lbl).get("policy") == "stack" for _, lbl in scrape(c))
