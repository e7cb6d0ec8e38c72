"""HealthPolicy spec parsing: defaults from the guide, and every invalid input named."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from stronghold_operator.models.base import InvalidSpec, parse
from stronghold_operator.models.health import HealthPolicySpec, forbidden_host


def _spec(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"checks": [{"name": "web", "http": {"url": "http://web:8000/health/"}}]}
    base.update(extra)
    return base


def test_defaults_follow_the_guide() -> None:
    policy = parse(
        HealthPolicySpec,
        _spec(
            checks=[
                {"name": "web", "http": {"url": "http://web:8000/health/", "healthDocument": {}}},
                {"name": "db", "postgres": {"host": "db"}},
                {"name": "cache", "memcached": {"address": "cache:11211"}},
            ]
        ),
    )
    assert policy.interval == timedelta(seconds=30)
    web, db, cache = policy.checks
    assert web.http is not None and web.http.latency.warning == timedelta(milliseconds=200)
    assert web.http.latency.critical == timedelta(milliseconds=500)
    assert web.http.health_document is not None
    assert [c.name for c in web.http.health_document.components] == ["database", "cache", "queue"]
    assert db.postgres is not None
    assert (db.postgres.connections.warning, db.postgres.connections.critical) == (80, 95)
    assert db.postgres.long_running_after == timedelta(minutes=5)
    assert cache.memcached is not None and cache.memcached.hit_ratio.warning_below == 80
    assert [s.after for s in policy.alerting.escalation] == [
        timedelta(minutes=30),
        timedelta(hours=1),
    ]
    assert web.type == "http" and db.type == "postgres" and cache.type == "memcached"


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        (_spec(checks=[]), "checks", "at least 1"),
        (_spec(interval="soon"), "interval", "duration"),
        (_spec(checks=[{"name": "web", "http": {"url": "ftp://x/"}}]), "checks[0].http", "scheme"),
        (
            _spec(checks=[{"name": "web", "http": {"url": "http://169.254.169.254/latest/"}}]),
            "checks[0].http",
            "metadata",
        ),
        (
            _spec(checks=[{"name": "web", "http": {"url": "http://[fe80::1]/"}}]),
            "checks[0].http",
            "link-local",
        ),
        (
            _spec(checks=[{"name": "web", "http": {"url": "http://metadata.google.internal/"}}]),
            "checks[0].http",
            "metadata",
        ),
        (
            _spec(
                checks=[
                    {
                        "name": "web",
                        "http": {
                            "url": "http://w/",
                            "latency": {"warning": "900ms", "critical": "300ms"},
                        },
                    }
                ]
            ),
            "checks[0].http.latency",
            "warning <= critical",
        ),
        (
            _spec(
                checks=[
                    {
                        "name": "db",
                        "postgres": {
                            "host": "db",
                            "connections": {"warning": 90, "critical": 80},
                        },
                    }
                ]
            ),
            "checks[0].postgres.connections",
            "warning <= critical",
        ),
        (_spec(checks=[{"name": "web"}]), "checks[0]", "exactly one"),
        (
            _spec(
                checks=[
                    {"name": "web", "http": {"url": "http://w/", "headers": {"Authorization": "x"}}}
                ]
            ),
            "checks[0].http.headers",
            "credential",
        ),
        (
            _spec(checks=[{"name": "web", "http": {"url": "http://w/"}, "dependsOn": ["db"]}]),
            "",
            "dependsOn",
        ),
        (
            _spec(
                checks=[
                    {"name": "web", "http": {"url": "http://w/"}},
                    {"name": "web", "http": {"url": "http://v/"}},
                ]
            ),
            "",
            "duplicate",
        ),
        (_spec(timeout="1m", interval="30s"), "", "timeout"),
        (
            _spec(checks=[{"name": "Web", "http": {"url": "http://w/"}}]),
            "checks[0].name",
            "pattern",
        ),
        (_spec(surprise=1), "surprise", "Extra"),
        (
            _spec(alerting={"webhook": {"format": "generic"}}),
            "alerting.webhook",
            "exactly one of url",
        ),
        (
            _spec(
                alerting={"escalation": [{"after": "1h", "level": 2}, {"after": "30m", "level": 3}]}
            ),
            "alerting.escalation",
            "increase",
        ),
        (
            _spec(checks=[{"name": "c", "memcached": {"address": "cache"}}]),
            "checks[0].memcached.address",
            "pattern",
        ),
        (
            _spec(incidentRules={"rules": [{"severity": "P0", "findings": ["Timeout"]}]}),
            "incidentRules.rules[0].severity",
            "P1",
        ),
    ],
)
def test_invalid_specs_name_the_field(spec: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        parse(HealthPolicySpec, spec)
    assert err.value.field == field
    assert words.lower() in str(err.value).lower()


def test_forbidden_hosts() -> None:
    assert forbidden_host("169.254.1.1") and forbidden_host("[fe80::1]")
    assert forbidden_host("METADATA.google.internal.")
    assert forbidden_host("127.0.0.1") is None and forbidden_host("web.app.svc") is None


def test_default_bands_and_components_are_shared_not_copied() -> None:
    # A thousand policies relying on the guide's defaults hold one object each, not a
    # thousand; the models are frozen, so sharing cannot leak a change between policies.
    spec = {
        "checks": [
            {"name": "w", "http": {"url": "http://127.0.0.1:1/", "healthDocument": {}}},
            {"name": "db", "postgres": {"host": "127.0.0.1"}},
        ]
    }
    a, b = parse(HealthPolicySpec, spec), parse(HealthPolicySpec, spec)
    assert a.checks[1].postgres is not None and b.checks[1].postgres is not None
    assert a.checks[1].postgres.connections is b.checks[1].postgres.connections
    assert a.alerting is b.alerting and a.incident_rules is b.incident_rules
    doc_a, doc_b = a.checks[0].http.health_document, b.checks[0].http.health_document  # type: ignore[union-attr]
    assert doc_a is not None and doc_b is not None
    assert doc_a.components is not doc_b.components  # each its own list ...
    assert doc_a.components[0] is doc_b.components[0]  # ... of the shared components
    explicit = parse(
        HealthPolicySpec,
        {
            "checks": [
                {
                    "name": "db",
                    "postgres": {"host": "h", "connections": {"warning": 1, "critical": 2}},
                }
            ]
        },
    )
    assert explicit.checks[0].postgres is not None
    assert explicit.checks[0].postgres.connections.warning == 1
    assert a.checks[1].postgres.connections.warning == 80
