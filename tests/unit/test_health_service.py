"""HealthPolicy service (services/health.py) on in-memory fakes of its ports."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from stronghold_operator import conditions as cond
from stronghold_operator.models.base import parse
from stronghold_operator.models.health import HealthPolicySpec
from stronghold_operator.models.outbound import Destination, parse_destinations
from stronghold_operator.probes.base import ProbeResult
from stronghold_operator.services import health as service

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
WHERE = service.Where("shop", "stack")
HOOK = "https://hooks.example.com/incidents"


@dataclass(frozen=True)
class Entry:
    value: str
    destinations: frozenset[Destination] = frozenset()


@dataclass
class FakeSecrets:
    entries: dict[tuple[str, str], Entry] = field(default_factory=dict)
    reads: list[tuple[str, str, str]] = field(default_factory=list)

    async def entry(self, namespace: str, name: str, key: str) -> Entry:
        self.reads.append((namespace, name, key))
        found = self.entries.get((name, key))
        if found is None:
            raise LookupError(f"Secret {namespace}/{name} not found")
        return found


@dataclass
class FakeProber:
    results: dict[str, ProbeResult] = field(default_factory=dict)
    calls: list[tuple[Mapping[str, Mapping[str, str]], Mapping[str, str]]] = field(
        default_factory=list
    )
    cursors: list[dict[str, float]] = field(default_factory=list)

    async def run(
        self,
        policy: HealthPolicySpec,
        secrets: Mapping[str, Mapping[str, str]],
        namespace: str = "default",
        refused: Mapping[str, str] | None = None,
        cursors: Mapping[str, float] | None = None,
    ) -> Mapping[str, ProbeResult]:
        self.calls.append((secrets, dict(refused or {})))
        self.cursors.append(dict(cursors or {}))
        return self.results


@dataclass(frozen=True)
class Delivery:
    ok: bool
    attempts: int = 1
    detail: str = "HTTP 200"


@dataclass
class FakeWebhooks:
    ok: bool = True
    posts: list[tuple[str, Any, str | None]] = field(default_factory=list)

    async def __call__(
        self,
        url: str,
        body: Any,
        *,
        timeout_s: float,
        delays: Sequence[float],
        authorization: str | None = None,
    ) -> Delivery:
        self.posts.append((url, body, authorization))
        return Delivery(self.ok, 1 if self.ok else 4, "HTTP 200" if self.ok else "HTTP 503")


@dataclass
class World:
    secrets: FakeSecrets = field(default_factory=FakeSecrets)
    prober: FakeProber = field(default_factory=FakeProber)
    webhooks: FakeWebhooks = field(default_factory=FakeWebhooks)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    spawned: list[Coroutine[Any, Any, None]] = field(default_factory=list)
    hold: str | None = None

    def ports(self) -> service.Ports:
        return service.Ports(
            secrets=self.secrets,
            prober=self.prober,
            post=self.webhooks,
            event=lambda kind, reason, message: self.events.append((kind, reason, message)),
            spawn=self.spawned.append,
            clock=lambda: T0,
            maintenance=lambda: self.hold,
        )

    async def background(self) -> None:
        await asyncio.gather(*self.spawned)
        self.spawned.clear()


def policy(**extra: Any) -> HealthPolicySpec:
    spec: dict[str, Any] = {
        "interval": "30s",
        "failureThreshold": 1,
        "checks": [{"name": "cache", "memcached": {"address": "cache:11211"}}],
    }
    spec.update(extra)
    return parse(HealthPolicySpec, spec)


def ready(r: service.Round) -> cond.Condition:
    return next(c for c in r.conditions if c.type == cond.READY)


CACHE_OK = ProbeResult(latency_ms=1, numbers={"getHits": 90, "getMisses": 10, "evictions": 0})


async def test_a_healthy_round_reports_its_checks_and_comes_back_at_the_interval() -> None:
    w = World()
    w.prober.results = {"cache": CACHE_OK}
    r = await service.run_round(policy(), {}, WHERE, w.ports())
    assert r.delay == 30 and not r.secret_missing and r.evaluation is not None
    assert [c["name"] for c in r.fields["checks"]] == ["cache"]
    assert ready(r).status == "True"
    assert w.events == [] and w.spawned == []


async def test_a_suspended_policy_is_not_probed() -> None:
    w = World()
    r = await service.run_round(policy(suspend=True), {}, WHERE, w.ports())
    assert ready(r).reason == cond.REASON_SUSPENDED and r.fields == {}
    assert w.prober.calls == [] and r.delay == 30


async def test_a_missing_secret_backs_off_without_probing() -> None:
    w = World()
    spec = policy(
        checks=[
            {
                "name": "queue",
                "rabbitmq": {"url": {"secretKeyRef": {"name": "mq", "key": "url"}}},
            }
        ]
    )
    first = await service.run_round(spec, {}, WHERE, w.ports(), secret_misses=0)
    later = await service.run_round(spec, {}, WHERE, w.ports(), secret_misses=3)
    assert first.secret_missing and ready(first).reason == cond.REASON_SECRET_MISSING
    assert "Secret shop/mq not found" in ready(first).message
    assert later.delay > first.delay  # backoff grows with the misses
    assert w.prober.calls == []


async def test_a_secret_goes_only_where_its_annotation_allows() -> None:
    w = World()
    w.secrets.entries[("db", "password")] = Entry("s3cret", parse_destinations("db-a:5432"))
    checks = [
        {
            "name": name,
            "postgres": {
                "host": host,
                "password": {"secretKeyRef": {"name": "db", "key": "password"}},
            },
        }
        for name, host in (("allowed", "db-a"), ("elsewhere", "db-b"))
    ]
    await service.run_round(policy(checks=checks), {}, WHERE, w.ports())
    [(secrets, refused)] = w.prober.calls
    assert secrets["allowed"] == {"password": "s3cret"} and secrets["elsewhere"] == {}
    assert set(refused) == {"elsewhere"} and "s3cret" not in refused["elsewhere"]


async def test_an_incident_is_an_event_and_a_redacted_webhook() -> None:
    w = World()
    w.secrets.entries[("hook", "auth")] = Entry(
        "Bearer t0ken", parse_destinations("hooks.example.com:443")
    )
    spec = policy(
        alerting={
            "webhook": {
                "url": HOOK,
                "authorization": {"secretKeyRef": {"name": "hook", "key": "auth"}},
            }
        }
    )
    w.prober.results = {"cache": ProbeResult.failed("Unreachable", "Bearer t0ken refused")}
    r = await service.run_round(spec, {}, WHERE, w.ports())
    assert r.fields.get("incident")
    kinds = [(kind, reason) for kind, reason, _ in w.events]
    assert ("Warning", "IncidentOpened") in kinds
    assert all("t0ken" not in message for _, _, message in w.events)
    await w.background()
    [(url, body, auth)] = w.webhooks.posts
    assert url == HOOK and auth == "Bearer t0ken"
    assert "t0ken" not in repr(body)


async def test_a_failed_webhook_is_a_warning_event() -> None:
    w = World(webhooks=FakeWebhooks(ok=False))
    spec = policy(alerting={"webhook": {"url": HOOK, "retries": 3}})
    w.prober.results = {"cache": ProbeResult.failed("Unreachable", "refused")}
    await service.run_round(spec, {}, WHERE, w.ports())
    await w.background()
    failed = [m for kind, reason, m in w.events if reason == "WebhookFailed"]
    assert failed and "failed after 4 attempt(s): HTTP 503" in failed[0]


async def test_maintenance_makes_the_incident_expected_and_sends_no_webhook() -> None:
    w = World(hold="upgrade")
    spec = policy(alerting={"webhook": {"url": HOOK}})
    w.prober.results = {"cache": ProbeResult.failed("Unreachable", "refused")}
    await service.run_round(spec, {}, WHERE, w.ports())
    await w.background()
    assert w.webhooks.posts == []
    assert any("expected: maintenance" in m for _, _, m in w.events)


def test_incident_and_first_good_news_are_not_condition_events() -> None:
    bad = {"Degraded"}

    def is_bad(t: cond.Transition) -> bool:
        return t.new == ("True" if t.type in bad else "False")

    first_good = cond.Transition("Ready", "Unknown", "True", "Reconciled", "", "Initializing")
    first_bad = cond.Transition("Degraded", "Unknown", "True", "Slow", "", "Initializing")
    incident = cond.Transition("IncidentOpen", "False", "True", "P2", "")
    assert not service.newsworthy(first_good, is_bad)
    assert service.newsworthy(first_bad, is_bad)
    assert not service.newsworthy(incident, is_bad)
