"""Series and caches of deleted objects go with them (issue 17 defect 11c)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

from prometheus_client import CollectorRegistry, Counter, Gauge

from stronghold_operator import metrics
from stronghold_operator.controllers import backup, health, maintenance, scaling
from stronghold_operator.controllers.health import HealthRuntime
from stronghold_operator.platforms.health import SecretCache
from stronghold_operator.platforms.kube import Kube, SecretEntry


def _series(registry: CollectorRegistry, name: str) -> set[tuple[str, str]]:
    return {
        (s.labels["namespace"], s.labels["policy"])
        for family in registry.collect()
        for s in family.samples
        if s.name.startswith(name)
    }


def test_forget_and_sweep_remove_only_the_gone_objects_series() -> None:
    reg = CollectorRegistry()
    gauge = Gauge("t_level", "", ["namespace", "policy", "kind"], registry=reg)
    count = Counter("t_events", "", ["namespace", "policy", "reason"], registry=reg)
    metrics.per_object("tests", gauge, count)
    for ns, name in (("a", "web"), ("a", "db"), ("b", "web")):
        gauge.labels(ns, name, "current").set(1)
        gauge.labels(ns, name, "desired").set(2)
        count.labels(ns, name, "Hold").inc()
        count.labels(ns, name, "ScaleUp").inc()
    assert metrics.forget_object("tests", "a", "db") == 4  # on delete: all four series
    assert _series(reg, "t_") == {("a", "web"), ("b", "web")}
    # A delete the watch never delivered: gone from the listing, its series go.
    assert metrics.sweep("tests", {("a", "web")}) == {("b", "web")}
    assert _series(reg, "t_") == {("a", "web")}
    assert metrics.sweep("tests", {("a", "web")}) == set()
    assert metrics.forget_object("tests", "a", "nothing") == 0


def test_every_kinds_per_object_series_are_registered() -> None:
    # Counters too: the decisions and results counters stayed after their objects went.
    registered = metrics._PER_OBJECT
    assert {scaling.DECISIONS, scaling.SCALE_ACTIONS, scaling.REPLICAS} <= set(
        registered[scaling.PLURAL]
    )
    assert maintenance.RESULTS in registered[maintenance.PLURAL]
    assert {backup.LAST_SUCCESS, backup.LAST_SIZE, backup.LAST_DURATION, backup.RESULTS} <= set(
        registered[backup.PLURAL]
    )


def test_scaling_series_go_with_the_policy() -> None:
    scaling.DECISIONS.labels("ns-x", "gone", "Hold", "Stable").inc()
    scaling.SCALE_ACTIONS.labels("ns-x", "gone", "up").inc()
    scaling.REPLICAS.labels("ns-x", "gone", "current").set(3)
    body: Any = {"metadata": {"namespace": "ns-x", "name": "gone", "uid": "u"}}
    scaling.ScalingLoop(None, body, None).close()  # type: ignore[arg-type]  # the policy is gone
    left = [
        s
        for family in metrics.registry.collect()
        for s in family.samples
        if s.labels.get("namespace") == "ns-x"
    ]
    assert left == []


def test_expired_secrets_of_deleted_policies_are_pruned() -> None:
    rt = HealthRuntime(health.new_scheduler(), secrets=SecretCache(cast(Kube, None)))
    assert rt.secrets is not None
    now = time.monotonic()
    rt.secrets.entries[("ns", "old", "password")] = (now - 1, SecretEntry("x", frozenset()))
    rt.secrets.entries[("ns", "live", "password")] = (now + 60, SecretEntry("y", frozenset()))
    rt.secrets.locks[("ns", "old", "password")] = asyncio.Lock()
    rt.prune_secrets(now)  # what a policy's loop does when it is forgotten
    assert set(rt.secrets.entries) == {("ns", "live", "password")}
    assert rt.secrets.locks == {}
