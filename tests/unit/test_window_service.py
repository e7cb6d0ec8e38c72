"""services/maintenance.py with in-memory fakes of its ports: holding, checks, release."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from stronghold_operator.logic.indexes import covered_entry
from stronghold_operator.models.common import MAINTENANCE_ANNOTATION
from stronghold_operator.models.maintenance import VOCABULARY, HttpCheck
from stronghold_operator.services import maintenance as service

START = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
END = START + timedelta(hours=1)
NS = "ops"


def obj(name: str, **extra: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NS, "resourceVersion": "1"}, **extra}


class FakeCovered:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, dict[str, Any]]] = {p: {} for p in service.COVERED}

    async def list(self, plural: str) -> list[dict[str, Any]] | None:
        return [copy.deepcopy(o) for o in self.objects[plural].values()]

    async def get(self, plural: str, name: str) -> dict[str, Any] | None:
        found = self.objects[plural].get(name)
        return copy.deepcopy(found) if found is not None else None

    async def set_annotations(self, plural: str, name: str, updates: Mapping[str, Any]) -> bool:
        found = self.objects[plural].get(name)
        if found is None:
            return False
        annotations = found["metadata"].setdefault("annotations", {})
        for key, update in updates.items():
            new = update(annotations.get(key))
            if new is None:
                annotations.pop(key, None)
            else:
                annotations[key] = new
        return True

    def holder(self, plural: str, name: str) -> str | None:
        annotations = self.objects[plural][name]["metadata"].get("annotations") or {}
        return annotations.get(MAINTENANCE_ANNOTATION)


class FakeWorkloads:
    def __init__(self) -> None:
        self.replicas = 2

    async def read(self, kind: str, name: str) -> dict[str, Any] | None:
        return {
            "metadata": {"name": name},
            "spec": {"replicas": self.replicas, "selector": {"matchLabels": {"app": name}}},
            "status": {"readyReplicas": self.replicas, "replicas": self.replicas},
        }

    async def pods(self, match_labels: Mapping[str, str]) -> list[dict[str, Any]]:
        return []


class FakeSnapshots:
    def __init__(self) -> None:
        self.data: dict[tuple[str, str], str] = {}

    async def store(self, name: str, key: str, text: str) -> None:
        self.data[(name, key)] = text

    async def read(self, name: str, key: str) -> str | None:
        return self.data.get((name, key))


class FakePages:
    async def check(self, check: HttpCheck) -> dict[str, Any]:
        return {"name": check.name, "type": "Http", "passed": True, "message": "HTTP 200"}


async def inline(fn: Callable[..., Any], /, *args: Any) -> Any:
    return fn(*args)


class World:
    def __init__(self, **spec: Any) -> None:
        self.covered = FakeCovered()
        self.covered.objects["scalingpolicies"]["web"] = obj(
            "web", spec={"targetRef": {"kind": "Deployment", "name": "web"}}
        )
        self.covered.objects["scalingpolicies"]["other"] = obj("other")
        self.workloads = FakeWorkloads()
        self.snapshots = FakeSnapshots()
        self.now = START - timedelta(minutes=10)
        self.spec: dict[str, Any] = {
            "schedule": {"start": START.isoformat(), "duration": "1h"},
            "targets": {"scalingPolicies": {"names": ["web"]}},
            "preChecks": {"leadTime": "30m"},
            "postChecks": {"healthyWithin": "0s"},
            **spec,
        }
        self.state = service.State.from_status({})
        self.ports = service.Ports(
            self.covered, self.workloads, self.snapshots, FakePages(), lambda: self.now, inline
        )

    def run(self, at: datetime) -> service.Pass:
        self.now = at
        meta = {"name": "w1", "namespace": NS}
        result = asyncio.run(service.reconcile(meta, self.spec, self.ports, self.state))
        self.state.status.update(result.status.to_status())
        return result


def reasons(result: service.Pass) -> list[str]:
    return [e.reason for e in result.events]


def conditions(result: service.Pass) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in result.status.conditions}


def test_window_opens_and_holds_its_objects() -> None:
    world = World()
    before = world.run(START - timedelta(minutes=10))
    assert "PreChecksPassed" in reasons(before) and "SnapshotTaken" in reasons(before)
    assert any(key == "before.json" for _, key in world.snapshots.data)
    opened = world.run(START + timedelta(minutes=1))
    assert opened.active and opened.held == 1
    assert world.covered.holder("scalingpolicies", "web") == "w1"
    assert world.covered.holder("scalingpolicies", "other") is None
    status = opened.status.to_status()
    assert status["frozenTargets"] == ["ScalingPolicy/web"]
    assert conditions(opened)["Active"][0] == "True"
    assert opened.interval <= service.BUSY_INTERVAL


def test_pre_check_failure_with_skip_holds_nothing() -> None:
    world = World(preChecks={"leadTime": "30m", "backup": {"backupSchedule": "missing"}})
    failed = world.run(START - timedelta(minutes=10))
    assert "PreChecksFailed" in reasons(failed)
    during = world.run(START + timedelta(minutes=1))
    assert not during.active
    assert world.covered.holder("scalingpolicies", "web") is None
    assert conditions(during)["PreChecksPassed"][0] == "False"


def test_post_check_differences_are_reported_and_objects_released_at_the_end() -> None:
    world = World()
    world.run(START - timedelta(minutes=10))
    world.run(START + timedelta(minutes=1))
    world.workloads.replicas = 1  # changed during the window
    after = world.run(END + timedelta(minutes=1))
    assert world.covered.holder("scalingpolicies", "web") is None
    assert not after.active and after.held == 0
    status = after.status.to_status()
    assert status["frozenTargets"] == []
    assert status["differences"], status
    assert any(c["name"] == "Snapshot" for c in status["checks"])
    assert any(key == "after.json" for _, key in world.snapshots.data)
    assert "Released" in reasons(after)


def test_release_all_leaves_other_windows_names() -> None:
    # A window being deleted (or force-deleted and cleaned up) takes only its own name off.
    world = World()
    world.covered.objects["scalingpolicies"]["web"]["metadata"]["annotations"] = {
        MAINTENANCE_ANNOTATION: "other-window,w1"
    }
    released = asyncio.run(service.release_all(world.covered, "w1"))
    assert released == ["ScalingPolicy/web"]
    assert world.covered.holder("scalingpolicies", "web") == "other-window"


def test_an_invalid_spec_releases_and_reports() -> None:
    world = World()
    world.run(START - timedelta(minutes=10))
    world.run(START + timedelta(minutes=1))
    world.spec = {"schedule": {"cron": "not a cron", "duration": "1h"}}
    invalid = world.run(START + timedelta(minutes=2))
    assert world.covered.holder("scalingpolicies", "web") is None
    assert conditions(invalid)["Ready"] == ("False", "InvalidSpec")
    assert invalid.status.to_status()["frozenTargets"] == []
    assert reasons(invalid) == ["Released"]


def test_every_condition_uses_the_vocabulary() -> None:
    world = World()
    for at in (START - timedelta(minutes=10), START + timedelta(minutes=1), END):
        for c in world.run(at).status.conditions:
            assert c.type in VOCABULARY.types and c.reason in VOCABULARY.reasons, c


class IndexedFake(FakeCovered):
    """``list`` as an index answers it: slim entries (no status), and within one pass blind to
    the window's own writes (the watch has not delivered them yet)."""

    def __init__(self) -> None:
        super().__init__()
        self.view: dict[str, list[dict[str, Any]]] | None = None

    async def list(self, plural: str) -> list[dict[str, Any]] | None:
        if self.view is None:
            self.view = {
                p: [e for o in objs.values() for e in covered_entry(o).values()]
                for p, objs in self.objects.items()
            }
        return copy.deepcopy(self.view[plural])


def test_a_window_on_an_index_sees_its_own_writes_and_reads_status_when_it_needs_it() -> None:
    world = World(
        targets={"scalingPolicies": {"names": ["web"]}, "healthPolicies": {"names": ["hp"]}},
        postChecks={"healthyWithin": "10m"},
    )
    world.covered = IndexedFake()
    world.covered.objects["scalingpolicies"]["web"] = obj(
        "web", spec={"targetRef": {"kind": "Deployment", "name": "web"}}
    )
    probed = (END + timedelta(minutes=2)).isoformat().replace("+00:00", "Z")
    world.covered.objects["healthpolicies"]["hp"] = obj(
        "hp",
        status={"conditions": [{"type": "Healthy", "status": "True"}], "lastProbeTime": probed},
    )
    world.ports = replace(world.ports, covered=world.covered)
    for at in (START - timedelta(minutes=10), START + timedelta(minutes=1)):
        world.covered.view = None  # a new pass: the watch has caught up meanwhile
        opened = world.run(at)
    assert opened.held == 2 and reasons(opened).count("Frozen") == 1  # not once per step
    assert world.covered.holder("healthpolicies", "hp") == "w1"
    world.covered.view = None
    after = world.run(END + timedelta(minutes=1))
    assert world.covered.holder("healthpolicies", "hp") is None
    health = next(c for c in after.status.to_status()["checks"] if c["name"] == "HealthPolicies")
    assert health["passed"], health  # status read from the API, not from the slim index
