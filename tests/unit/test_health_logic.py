"""HealthPolicy decisions: bands, thresholds, classification, incident lifecycle."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stronghold_operator.logic import health as h
from stronghold_operator.models.base import InvalidSpec, parse
from stronghold_operator.models.health import HealthPolicySpec
from stronghold_operator.probes.base import (
    Blocker,
    LongQuery,
    ProbeResult,
    QueueStats,
    Series,
    UrlResult,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
WEB = "http://web:8000/health/"


def stack(**extra: Any) -> HealthPolicySpec:
    spec: dict[str, Any] = {
        "failureThreshold": 1,
        "checks": [
            {"name": "web", "http": {"url": WEB, "healthDocument": {}}},
            {"name": "db", "postgres": {"host": "db"}},
            {"name": "cache", "memcached": {"address": "cache:11211"}},
            {
                "name": "queue",
                "rabbitmq": {
                    "url": {"secretKeyRef": {"name": "mq", "key": "url"}},
                    "queues": [
                        {
                            "name": "celery",
                            "depth": {"warning": 10, "critical": 100},
                            "minConsumers": 1,
                        }
                    ],
                },
            },
        ],
    }
    spec.update(extra)
    return parse(HealthPolicySpec, spec)


def web_ok(latency: float = 20.0, **components: str) -> ProbeResult:
    comps = {"database": "connected", "cache": "connected", "queue": "connected"} | components
    bad = any(v != "connected" for v in comps.values())
    return ProbeResult(
        latency_ms=latency,
        urls=(
            UrlResult(
                WEB,
                503 if bad else 200,
                latency,
                document_status="unhealthy" if bad else "healthy",
                components=comps,
            ),
        ),
    )


def db_ok(**numbers: float) -> ProbeResult:
    n: dict[str, float] = {"connectionsUsed": 10, "maxConnections": 100, "connectionsPercent": 10}
    n.update(numbers)
    return ProbeResult(latency_ms=5, numbers=n, sessions_by_state={"active": 1, "idle": 9})


def cache_ok(hits: int = 90, gets: int = 100, evictions: int = 0) -> ProbeResult:
    return ProbeResult(
        latency_ms=1,
        numbers={
            "getHits": hits,
            "cmdGet": gets,
            "evictionsTotal": evictions,
            "bytes": 10,
            "limitMaxBytes": 100,
            "currConnections": 3,
        },
    )


def queue_ok(messages: int = 0, consumers: int = 1) -> ProbeResult:
    return ProbeResult(latency_ms=3, queues=(QueueStats("celery", messages, consumers),))


def all_ok() -> dict[str, ProbeResult]:
    return {"web": web_ok(), "db": db_ok(), "cache": cache_ok(), "queue": queue_ok()}


def down(msg: str = "connection refused") -> ProbeResult:
    return ProbeResult.failed("Unreachable", msg)


# ----------------------------------------------------------------- assessments


def test_latency_bands_of_the_guide() -> None:
    policy = stack()
    web = policy.checks[0]
    assert h.assess(web, web_ok(150), None).state == "Healthy"
    warn = h.assess(web, web_ok(250), None)
    assert warn.state == "Warning" and warn.findings[0].code == "LatencyWarning"
    crit = h.assess(web, web_ok(600), None)
    assert crit.state == "Critical" and crit.reason == "LatencyCritical"
    assert "600ms >= 500ms" in crit.message


def test_health_document_component_is_reported_as_its_own_problem() -> None:
    a = h.assess(stack().checks[0], web_ok(database="disconnected"), None)
    codes = {f.code for f in a.findings}
    assert codes == {"UnexpectedStatus", "Unhealthy", "ComponentDown"}
    comp = next(f for f in a.findings if f.code == "ComponentDown")
    assert comp.component == "database" and "disconnected" in comp.message
    assert a.measurements["urls"][0]["components"]["database"] == "disconnected"


def test_non_json_error_page_is_a_result() -> None:
    r = ProbeResult(latency_ms=4, urls=(UrlResult(WEB, 502, 4.0),))
    a = h.assess(stack().checks[0], r, None)
    assert a.state == "Critical" and a.reason == "UnexpectedStatus"


def test_rate_limited_is_unknown_not_down() -> None:
    r = ProbeResult(
        latency_ms=2,
        urls=(UrlResult(WEB, 429, 2.0, failure="RateLimited", retry_after_s=30),),
    )
    a = h.assess(stack().checks[0], r, None)
    assert (a.state, a.reason) == ("Unknown", "RateLimited")
    assert a.measurements["retryAfterSeconds"] == 30 and not a.findings


def test_postgres_connections_blockers_long_queries() -> None:
    db = stack().checks[1]
    a = h.assess(db, db_ok(connectionsPercent=85, connectionsUsed=85), None)
    assert a.state == "Warning" and a.reason == "ConnectionsWarning"
    a = h.assess(db, db_ok(connectionsPercent=96), None)
    assert a.state == "Critical" and a.reason == "ConnectionsCritical"
    blocked = ProbeResult(
        latency_ms=5,
        numbers={"connectionsPercent": 5, "blockedSessions": 1},
        blockers=(Blocker(42, "alice", "psql", (43,)),),
        long_queries=(LongQuery(42, "alice", 400.0),),
    )
    a = h.assess(db, blocked, None)
    codes = {f.code for f in a.findings}
    assert codes == {"BlockedSessions", "LongRunningQueries"}
    assert "pid 42 (alice)" in a.message
    assert a.measurements["blockers"][0]["blockedPids"] == [43]
    assert a.measurements["slowStatements"] == "unavailable"  # information, not a finding


def test_postgres_growth_since_last_probe() -> None:
    db = stack().checks[1]
    prev = {"measurements": {"dbSizeBytes": 1000}}
    a = h.assess(db, db_ok(dbSizeBytes=1500), prev)
    assert a.measurements["dbGrowthBytes"] == 500


def test_memcached_interval_hit_ratio_and_evictions() -> None:
    cache = stack().checks[2]
    first = h.assess(cache, cache_ok(hits=900, gets=1000), None)
    assert first.measurements["hitRatio"] == 90.0 and first.state == "Healthy"
    # 1000 more gets, only 100 hits: cumulative 50 %, this interval 10 % -> Critical.
    prev = {"measurements": first.measurements}
    a = h.assess(cache, cache_ok(hits=1000, gets=2000, evictions=5000), prev)
    assert a.measurements["intervalHitRatio"] == 10.0
    assert a.measurements["evictionsPerInterval"] == 5000
    assert {f.code for f in a.findings} == {"HitRatioLow", "Evictions"}
    assert a.state == "Critical"


def test_memcached_counter_reset_is_not_negative() -> None:
    cache = stack().checks[2]
    prev = {"measurements": {"getHits": 5000, "cmdGet": 6000, "evictionsTotal": 10}}
    a = h.assess(cache, cache_ok(hits=9, gets=10), prev)
    assert "intervalHitRatio" not in a.measurements and "evictionsPerInterval" not in a.measurements


def test_rabbitmq_depth_consumers_missing() -> None:
    q = stack().checks[3]
    a = h.assess(q, queue_ok(messages=50, consumers=0), None)
    assert {f.code for f in a.findings} == {"QueueDepthHigh", "ConsumersLow"}
    assert a.state == "Warning"
    gone = ProbeResult(latency_ms=1, queues=(QueueStats("celery", None, None),))
    assert h.assess(q, gone, None).reason == "QueueMissing"


# ----------------------------------------------------------------- thresholds


def test_failure_and_success_thresholds() -> None:
    c = h.count(None, 0, 0, "Healthy", 3, 2)
    assert c.state == "Unknown"  # one success < successThreshold 2
    c = h.count(c.state, c.successes, c.failures, "Healthy", 3, 2)
    assert c.state == "Healthy"
    for expected in ("Healthy", "Healthy", "Critical"):
        c = h.count(c.state, c.successes, c.failures, "Critical", 3, 2)
        assert c.state == expected
    c = h.count(c.state, c.successes, c.failures, "Warning", 3, 2)
    assert c.state == "Warning"  # already failing: the level follows at once
    c = h.count(c.state, c.successes, c.failures, "Unknown", 3, 2)
    assert c.state == "Warning"  # no answer keeps the state
    c = h.count(c.state, c.successes, c.failures, "Healthy", 3, 2)
    assert c.state == "Warning"
    c = h.count(c.state, c.successes, c.failures, "Healthy", 3, 2)
    assert c.state == "Healthy"


@given(
    st.lists(st.sampled_from(["Healthy", "Warning", "Critical", "Unknown"]), max_size=40),
    st.integers(1, 5),
    st.integers(1, 5),
)
def test_threshold_counting_properties(obs: list[Any], fthr: int, sthr: int) -> None:
    c = h.Counted("Unknown", 0, 0)
    bad_run = 0
    for o in obs:
        before = c.state
        c = h.count(c.state, c.successes, c.failures, o, fthr, sthr)
        assert c.successes == 0 or c.failures == 0
        if o == "Unknown":
            assert c.state == before
        if o in ("Warning", "Critical"):
            bad_run += 1
            if before in ("Healthy", "Unknown") and bad_run < fthr:
                assert c.state == before
        elif o == "Healthy":
            bad_run = 0


# ----------------------------------------------------------------- classification


def verdicts(policy: HealthPolicySpec, results: dict[str, ProbeResult]) -> list[h.CheckVerdict]:
    out = []
    for c in policy.checks:
        a = h.assess(c, results[c.name], None)
        out.append(h.CheckVerdict(c.name, c.type, a.state, a.findings, a.message))
    return out


def test_database_down_is_one_p1_rooted_in_the_database() -> None:
    policy = stack()
    results = all_ok() | {"db": down(), "web": web_ok(database="disconnected")}
    found = h.classify(policy, verdicts(policy, results))
    assert found is not None
    assert (found.severity, found.root_cause, found.affected) == ("P1", "db", ("web",))
    assert "also affected: web" in found.summary


def test_cache_down_alone_is_p2() -> None:
    policy = stack()
    found = h.classify(policy, verdicts(policy, all_ok() | {"cache": down()}))
    assert found is not None and (found.severity, found.root_cause) == ("P2", "cache")


def test_warning_dependency_does_not_explain_a_web_outage() -> None:
    policy = stack()
    results = all_ok() | {"db": db_ok(connectionsPercent=85), "web": down()}
    found = h.classify(policy, verdicts(policy, results))
    assert found is not None and (found.severity, found.root_cause) == ("P1", "web")


def test_p3_and_p4_levels() -> None:
    policy = stack()
    found = h.classify(policy, verdicts(policy, all_ok() | {"web": web_ok(700)}))
    assert found is not None and found.severity == "P3"
    found = h.classify(policy, verdicts(policy, all_ok() | {"web": web_ok(300)}))
    assert found is not None and found.severity == "P4"
    assert h.classify(policy, verdicts(policy, all_ok())) is None


def test_user_rules_override_the_defaults() -> None:
    policy = stack(
        incidentRules={
            "rules": [{"severity": "P1", "findings": ["LatencyWarning"], "checks": ["web"]}]
        }
    )
    found = h.classify(policy, verdicts(policy, all_ok() | {"web": web_ok(300)}))
    assert found is not None and found.severity == "P1"


# ----------------------------------------------------------------- lifecycle


def run(
    policy: HealthPolicySpec,
    status: dict[str, Any],
    results: dict[str, ProbeResult],
    now: datetime,
    maintenance: str | None = None,
) -> tuple[dict[str, Any], h.Evaluation]:
    ev = h.evaluate(policy, "stack", status, results, maintenance, now)
    new = dict(status) | ev.status
    return new, ev


def test_incident_open_escalate_resolve() -> None:
    policy = stack(alerting={"webhook": {"url": "http://hook:9000/"}})
    status, ev = run(policy, {}, all_ok(), T0)
    assert ev.severity == "None" and not ev.notifications
    assert {c.type: c.status for c in ev.conditions} == {
        "Ready": "True",
        "Healthy": "True",
        "Degraded": "False",
        "IncidentOpen": "False",
    }

    bad = all_ok() | {"db": down(), "web": web_ok(database="disconnected")}
    status, ev = run(policy, status, bad, T0 + timedelta(seconds=30))
    assert [n.kind for n in ev.notifications] == ["Opened"]
    note = ev.notifications[0]
    assert note.webhooks and not note.expected and "INCIDENT START - P1" in note.message
    inc = status["incident"]
    assert inc["id"] == "stack-20260101-120030" and inc["rootCause"] == "db"
    conds = {c.type: c for c in ev.conditions}
    assert conds["IncidentOpen"].reason == "P1Critical" and conds["Healthy"].status == "False"
    assert conds["Healthy"].reason == "Unreachable"

    status, ev = run(policy, status, bad, T0 + timedelta(minutes=31))
    assert [(n.kind, n.level) for n in ev.notifications] == [("Escalated", 2)]
    status, ev = run(policy, status, bad, T0 + timedelta(minutes=40))
    assert not ev.notifications
    status, ev = run(policy, status, bad, T0 + timedelta(minutes=61))
    assert [(n.kind, n.level) for n in ev.notifications] == [("Escalated", 3)]

    # Flap damping: healthy again, the incident resolves after the second healthy round
    # (resolveAfter 2), ending at the first.
    status, ev = run(policy, status, all_ok(), T0 + timedelta(minutes=75, seconds=30))
    assert not ev.notifications and status["incident"]["healthyRounds"] == 1
    status, ev = run(policy, status, all_ok(), T0 + timedelta(minutes=76))
    assert [n.kind for n in ev.notifications] == ["Resolved"]
    assert "INCIDENT RESOLVED - Duration: 1h 15m" in ev.notifications[0].message
    assert status["incident"] is None and ev.severity == "None"
    recent = status["recentIncidents"]
    assert recent[0]["durationSeconds"] == 75 * 60 and recent[0]["rootCause"] == "db"
    assert recent[0]["severity"] == "P1"


def test_severity_change_is_notified_and_max_kept() -> None:
    policy = stack(flapDamping={"resolveAfter": 1})
    status, _ = run(policy, {}, all_ok() | {"cache": down()}, T0)
    assert status["incident"]["severity"] == "P2"
    status, ev = run(
        policy, status, all_ok() | {"cache": down(), "db": down()}, T0 + timedelta(seconds=30)
    )
    assert [n.kind for n in ev.notifications] == ["SeverityChanged"]
    status, ev = run(policy, status, all_ok() | {"web": web_ok(300)}, T0 + timedelta(seconds=60))
    assert status["incident"]["severity"] == "P4" and status["incident"]["maxSeverity"] == "P1"
    status, ev = run(policy, status, all_ok(), T0 + timedelta(seconds=90))
    assert status["recentIncidents"][0]["severity"] == "P1"


def test_maintenance_marks_incident_expected_without_webhook() -> None:
    policy = stack(
        alerting={"webhook": {"url": "http://hook:9000/"}}, flapDamping={"resolveAfter": 1}
    )
    status, ev = run(policy, {}, all_ok() | {"db": down()}, T0, maintenance="weekly")
    note = ev.notifications[0]
    assert note.expected and note.webhooks == ()
    assert status["incident"]["expected"] and status["incident"]["maintenanceWindow"] == "weekly"
    assert {c.type: c.reason for c in ev.conditions}["IncidentOpen"] == "MaintenanceInProgress"
    # Escalation during maintenance: an Event, still no webhook.
    status, ev = run(
        policy, status, all_ok() | {"db": down()}, T0 + timedelta(minutes=31), maintenance="weekly"
    )
    assert ev.notifications[0].kind == "Escalated" and ev.notifications[0].webhooks == ()
    # The window ends with the incident still open: now it is news.
    status, ev = run(policy, status, all_ok() | {"db": down()}, T0 + timedelta(minutes=32))
    assert [n.kind for n in ev.notifications] == ["Opened"] and ev.notifications[0].webhooks
    status, ev = run(policy, status, all_ok(), T0 + timedelta(minutes=33))
    assert status["recentIncidents"][0]["expected"] is False


def test_thresholds_delay_the_incident_and_keep_findings() -> None:
    policy = stack(failureThreshold=2, successThreshold=2, flapDamping={"resolveAfter": 1})
    status, _ = run(policy, {}, all_ok(), T0 - timedelta(seconds=10))
    assert status["checks"][2]["state"] == "Unknown"  # 1 success < successThreshold
    status, _ = run(policy, status, all_ok(), T0)
    status, ev = run(policy, status, all_ok() | {"cache": down()}, T0 + timedelta(seconds=10))
    cache = status["checks"][2]
    assert (cache["state"], cache["observedState"], cache["consecutiveFailures"]) == (
        "Healthy",
        "Critical",
        1,
    )
    assert status["incident"] is None
    status, _ = run(policy, status, all_ok() | {"cache": down()}, T0 + timedelta(seconds=20))
    assert status["incident"]["rootCause"] == "cache"
    status, _ = run(policy, status, all_ok(), T0 + timedelta(seconds=30))
    cache = status["checks"][2]
    assert cache["state"] == "Critical" and cache["findings"][0]["code"] == "Unreachable"
    assert status["incident"] is not None  # one good result < successThreshold 2
    status, ev = run(policy, status, all_ok(), T0 + timedelta(seconds=40))
    assert status["incident"] is None and ev.notifications[0].kind == "Resolved"


def test_evaluate_reports_worst_latency_and_counts() -> None:
    policy = stack()
    status, _ = run(policy, {}, all_ok() | {"web": web_ok(123.4)}, T0)
    assert status["worstLatency"] == "123ms" and status["worstLatencyMs"] == 123.4
    assert status["lastProbeTime"] == "2026-01-01T12:00:00Z"
    assert status["checks"][0]["consecutiveSuccesses"] == 1


def test_all_unknown_first_round() -> None:
    policy = stack(failureThreshold=3)
    _, ev = run(policy, {}, {k: down() for k in ("web", "db", "cache", "queue")}, T0)
    conds = {c.type: c.status for c in ev.conditions}
    assert conds["Healthy"] == "Unknown" and conds["Degraded"] == "Unknown"
    assert ev.severity == "None"


# ----------------------------------------------------------------- webhooks


def test_webhook_bodies_generic_and_alertmanager() -> None:
    policy = stack(
        alerting={"webhook": {"url": "http://hook/", "format": "alertmanager"}},
        flapDamping={"resolveAfter": 1},
    )
    status, ev = run(policy, {}, all_ok() | {"db": down()}, T0)
    note = ev.notifications[0]
    hook = note.webhooks[0]
    am = h.webhook_body(note, hook, "prod", "stack", ev.verdicts, T0)
    assert am[0]["labels"]["severity"] == "P1" and am[0]["labels"]["root_cause"] == "db"
    assert "endsAt" not in am[0]
    _, ev = run(policy, status, all_ok(), T0 + timedelta(minutes=5))
    am = h.webhook_body(ev.notifications[0], hook, "prod", "stack", ev.verdicts, T0)
    assert am[0]["endsAt"] == "2026-01-01T12:05:00Z"
    generic = policy.model_copy(update={})
    gen = h.webhook_body(
        ev.notifications[0],
        generic.alerting.webhook.model_copy(  # type: ignore[union-attr]
            update={"format": "generic"}
        ),
        "prod",
        "stack",
        ev.verdicts,
        T0,
    )
    assert gen["event"] == "Resolved" and gen["durationSeconds"] == 300


def test_redact_and_backoff() -> None:
    assert h.redact("auth failed for s3cr3t-pw", ["s3cr3t-pw", ""]) == "auth failed for ***"
    assert h.retry_delays(4) == [0.5, 1.0, 2.0, 4.0]
    assert h.missing_secret_backoff(0, timedelta(seconds=30)) == 5.0
    assert h.missing_secret_backoff(10, timedelta(seconds=30)) == 120.0


def test_prometheus_series_against_bands() -> None:
    policy = parse(
        HealthPolicySpec,
        {
            "checks": [
                {
                    "name": "disk",
                    "prometheus": {
                        "url": "http://prom:9090",
                        "query": "disk_used_percent",
                        "bands": {"target": 75, "warning": 85, "critical": 95},
                        "unit": "%",
                    },
                }
            ]
        },
    )
    c = policy.checks[0]
    r = ProbeResult(
        latency_ms=3,
        series=(Series({"mountpoint": "/"}, 50.0), Series({"mountpoint": "/var"}, 96.5)),
    )
    a = h.assess(c, r, None)
    assert (a.state, a.reason) == ("Critical", "MetricCritical")
    assert "mountpoint=/var: 96.5%" in a.message
    assert [s["labels"] for s in a.measurements["series"]] == ["mountpoint=/", "mountpoint=/var"]
    empty = h.assess(c, ProbeResult(latency_ms=3), None)
    assert (empty.state, empty.reason) == ("Unknown", "NoData")
    # An unmatched critical finding is P3; warning-level is P4.
    found = h.classify(policy, [h.CheckVerdict("disk", "prometheus", a.state, a.findings, "")])
    assert found is not None and found.severity == "P3"


def test_prometheus_needs_exactly_one_band_kind() -> None:
    check = {"name": "d", "prometheus": {"url": "http://p:9090", "query": "up"}}
    with pytest.raises(InvalidSpec, match="exactly one of bands, lowerBands"):
        parse(HealthPolicySpec, {"checks": [check]})


def test_secrets_in_probe_words_are_redacted_from_the_status() -> None:
    policy = stack()
    leaky = {
        **all_ok(),
        "db": ProbeResult.failed("Unreachable", 'password "s3cret-pw" refused; dsn pw=a"b\\c'),
    }
    ev = h.evaluate(policy, "stack", {}, leaky, None, T0, ["s3cret-pw", 'a"b\\c', "ab"])
    text = json.dumps(ev.status)
    db = next(c for c in ev.status["checks"] if c["name"] == "db")
    assert "s3cret-pw" not in text and 'a\\"b\\\\c' not in text
    assert db["message"].startswith('password "***" refused; dsn pw=***')
    # One or two characters are not redacted: they would mangle every message instead.
    short = h.evaluate(
        policy, "stack", {}, {**all_ok(), "db": down("no table ab")}, None, T0, ["ab"]
    )
    assert "no table ab" in json.dumps(short.status)
    clean = h.evaluate(policy, "stack", {}, all_ok(), None, T0, ["s3cret-pw"])
    assert clean.status == h.evaluate(policy, "stack", {}, all_ok(), None, T0).status


def test_each_escalation_level_has_its_own_receiver_and_alertmanager_labels() -> None:
    policy = stack(
        alerting={
            "webhook": {"url": "http://hook:9000/"},
            "escalation": [
                {
                    "after": "30m",
                    "level": 2,
                    "webhook": {
                        "url": "http://l2:9000/",
                        "format": "alertmanager",
                        "labels": {"team": "seniors"},
                    },
                },
                {
                    "after": "1h",
                    "level": 3,
                    "webhook": {"url": "http://l3:9000/", "labels": {"team": "dev"}},
                },
                {"after": "4h", "level": 4, "webhook": {"url": "http://l4:9000/"}},
            ],
        }
    )
    bad = all_ok() | {"db": down()}
    status, _ = run(policy, {}, all_ok(), T0)
    status, ev = run(policy, status, bad, T0)
    assert [h.url for h in ev.notifications[0].webhooks] == ["http://hook:9000/"]
    status, ev = run(policy, status, bad, T0 + timedelta(minutes=30))
    (note,) = ev.notifications
    assert note.level == 2 and [w.url for w in note.webhooks] == [
        "http://hook:9000/",
        "http://l2:9000/",
    ]
    (alert,) = h.webhook_body(note, note.webhooks[1], "shop", "stack", ev.verdicts, T0)
    assert (
        alert["labels"]["team"] == "seniors"
        and alert["labels"]["alertname"] == "StrongholdIncident"
    )
    assert alert["annotations"]["escalation_level"] == "2"
    status, ev = run(policy, status, bad, T0 + timedelta(hours=1))
    (note,) = ev.notifications
    assert note.level == 3 and note.webhooks[-1].url == "http://l3:9000/"
    generic = h.webhook_body(note, note.webhooks[-1], "shop", "stack", ev.verdicts, T0)
    assert generic["labels"] == {"team": "dev"} and generic["escalationLevel"] == 3
    # Acknowledged: no level 4, whatever its age.
    status["incident"]["acknowledgedBy"] = "alice"
    status, ev = run(policy, status, bad, T0 + timedelta(hours=5))
    assert ev.notifications == [] and status["incident"]["escalationLevel"] == 3


def test_webhook_labels_must_be_prometheus_label_names() -> None:
    with pytest.raises(InvalidSpec, match="label"):
        stack(alerting={"webhook": {"url": "http://hook:9000/", "labels": {"bad-name": "x"}}})
