"""controllers/incident.IncidentKeeper on an in-memory API: what it asks of the API server
when an incident opens, changes, is acknowledged or resolved, and retention."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest

from stronghold_operator import conditions as cond
from stronghold_operator.controllers.incident import IncidentKeeper, Policy
from stronghold_operator.logic import incident as li
from stronghold_operator.logic.events import Limits
from stronghold_operator.models.errors import ApiError
from stronghold_operator.models.health import IncidentHistory
from stronghold_operator.platforms.kube import Kind
from stronghold_operator.runtime import events

SECRET = "very-secret-password"
POSTED: list[tuple[str, str]] = []


@pytest.fixture(autouse=True)
def captured_events() -> None:
    POSTED.clear()
    events.configure(Limits(), send=lambda body, t, reason, msg: POSTED.append((reason, msg)))


class FakeKube:
    """Objects by (plural, namespace, name); every call counted."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.refuse_create = False  # 403, as without the incidents RBAC

    async def create(self, kind: Kind, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self.calls.append(("create", kind.plural))
        if self.refuse_create:
            raise ApiError(403, "Forbidden")
        key = (kind.plural, namespace, body["metadata"]["name"])
        if key in self.objects:
            raise ApiError(409, "Conflict")
        obj = {
            **body,
            "metadata": {
                **body["metadata"],
                "uid": "u-1",
                "creationTimestamp": cond.rfc3339(cond.utcnow()),
            },
        }
        self.objects[key] = obj
        return obj

    async def get(self, kind: Kind, name: str, namespace: str | None = None) -> dict[str, Any]:
        self.calls.append(("get", kind.plural))
        try:
            return self.objects[(kind.plural, str(namespace), name)]
        except KeyError:
            raise ApiError(404, "NotFound") from None

    async def list(
        self, kind: Kind, namespace: str | None = None, *, labels: Any = None
    ) -> list[dict[str, Any]]:
        self.calls.append(("list", kind.plural))
        return [o for (p, ns, _), o in self.objects.items() if p == kind.plural and ns == namespace]

    async def patch(
        self,
        kind: Kind,
        name: str,
        namespace: str,
        body: Mapping[str, Any],
        *,
        subresource: str | None = None,
    ) -> None:
        self.calls.append(("patch", kind.plural))
        obj = self.objects[(kind.plural, namespace, name)]
        if "status" in body:
            obj["status"] = cond.merge_patch(obj.get("status") or {}, body["status"])
        if "metadata" in body:
            obj["metadata"] = cond.merge_patch(obj["metadata"], body["metadata"])

    async def delete(self, kind: Kind, name: str, namespace: str, **_: Any) -> None:
        self.calls.append(("delete", kind.plural))
        self.objects.pop((kind.plural, namespace, name), None)


POLICY = Policy("shop", "stack", "uid-p", IncidentHistory(count=1, max_age=timedelta(days=1)))
CHECKS = [
    {
        "name": "db",
        "type": "postgres",
        "state": "Critical",
        "reason": "Unreachable",
        "message": f"auth with {SECRET} failed",
        "measurements": {},
    },
]


def note(kind: str, id_: str = "stack-20260101-120000", **extra: Any) -> li.News:
    incident = {
        "id": id_,
        "severity": "P1",
        "maxSeverity": "P1",
        "rootCause": "db",
        "summary": "db down",
        "startedAt": "2026-01-01T12:00:00Z",
    } | extra
    return li.News(kind, incident, f"{kind}: db", int(extra.get("escalationLevel", 1)))


async def settle(keeper: IncidentKeeper) -> None:
    for _ in range(50):
        await asyncio.sleep(0)
        pending = [t for t in keeper._chains.values() if not t.done()]
        writing = [w.writing for w in keeper.writers.values() if w.writing is not None]
        if not pending and not writing:
            return
        await asyncio.wait([*pending, *writing], timeout=2)


def incident_of(kube: FakeKube, name: str = "stack-20260101-120000") -> dict[str, Any]:
    return kube.objects[("incidents", "shop", name)]


async def test_open_creates_gathers_once_writes_once_and_nothing_per_round() -> None:
    kube = FakeKube()
    kube.objects[("replicasets", "shop", "web-1")] = {
        "metadata": {
            "name": "web-1",
            "creationTimestamp": cond.rfc3339(cond.utcnow()),
            "ownerReferences": [{"kind": "Deployment", "name": "web"}],
        }
    }
    keeper = IncidentKeeper(kube)  # type: ignore[arg-type]
    port = keeper.port(POLICY)
    port.record(note("Opened"), CHECKS, ["db"], [SECRET])
    port.record(note("Escalated", escalationLevel=2), CHECKS, ["db"], [SECRET])  # while creating
    await settle(keeper)
    obj = incident_of(kube)
    assert obj["metadata"]["ownerReferences"][0]["uid"] == "uid-p"
    assert obj["metadata"]["labels"] == {"ops.stronghold.io/healthpolicy": "stack"}
    status = obj["status"]
    assert status["state"] == "Open" and status["escalationLevel"] == 2
    assert [e["type"] for e in status["timeline"]] == ["Detected", "Escalated"]
    assert status["evidence"]["rollouts"][0]["name"] == "web"
    assert SECRET not in str(obj) and SECRET not in str(POSTED)
    lists = [c for c in kube.calls if c[0] == "list"]
    # 5 evidence LISTs (pods twice: the pods and their PodMetrics; retention needs none);
    # then nothing while nothing happens.
    assert sorted(p for _, p in lists) == sorted(
        ["replicasets", "controllerrevisions", "pods", "pods", "events"]
    )
    assert status["evidence"]["usage"] == []  # the namespace has no pods
    assert ("IncidentOpened", "Opened: db") in POSTED
    before = len(kube.calls)
    await settle(keeper)
    assert len(kube.calls) == before


async def test_ack_then_resolve_and_retention_prunes_the_older() -> None:
    kube = FakeKube()
    keeper = IncidentKeeper(kube)  # type: ignore[arg-type]
    port = keeper.port(POLICY)
    port.record(note("Opened"), CHECKS, ["db"], [])
    await settle(keeper)
    obj = incident_of(kube)
    obj["metadata"]["annotations"] = {"ops.stronghold.io/ack": "alice"}
    keeper.observe({"type": "MODIFIED"}, obj)
    await settle(keeper)
    assert incident_of(kube)["status"]["state"] == "Acknowledged"
    assert port.hand("stack-20260101-120000") == li.Hand("alice")
    port.record(note("Resolved"), CHECKS, [], [])
    await settle(keeper)
    first = incident_of(kube)["status"]
    assert first["state"] == "Resolved" and first["resolvedBy"] == "operator"
    assert keeper.writers == {}  # a resolved Incident holds no writer
    # A second incident opens and resolves: count 1 keeps the newer only.
    second = "stack-20260101-130000"
    port.record(note("Opened", second), CHECKS, ["db"], [])
    await settle(keeper)
    port.record(note("Resolved", second), CHECKS, [], [])
    await settle(keeper)
    assert [k[2] for k in kube.objects if k[0] == "incidents"] == [second]


async def test_an_existing_incident_is_adopted_after_a_restart() -> None:
    kube = FakeKube()
    first = IncidentKeeper(kube)  # type: ignore[arg-type]
    first.port(POLICY).record(note("Opened"), CHECKS, ["db"], [])
    await settle(first)
    again = IncidentKeeper(kube)  # the operator restarted
    again.port(POLICY).record(note("Opened"), CHECKS, ["db"], [])  # maintenance ended, say
    await settle(again)
    status = incident_of(kube)["status"]
    assert [e["type"] for e in status["timeline"]] == ["Detected", "Announced"]


async def test_a_refused_creation_is_made_good_at_the_next_news() -> None:
    kube = FakeKube()
    kube.refuse_create = True
    keeper = IncidentKeeper(kube)  # type: ignore[arg-type]
    port = keeper.port(POLICY)
    port.record(note("Opened"), CHECKS, ["db"], [])
    await settle(keeper)
    assert not [k for k in kube.objects if k[0] == "incidents"]
    kube.refuse_create = False  # the RBAC is fixed
    port.record(note("Escalated", escalationLevel=2), CHECKS, ["db"], [])
    await settle(keeper)
    status = incident_of(kube)["status"]
    assert status["state"] == "Open" and status["evidence"]["checks"][0]["name"] == "db"


async def test_retention_by_age_from_the_watch_without_a_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kube = FakeKube()
    keeper = IncidentKeeper(kube)  # type: ignore[arg-type]
    policy = Policy("shop", "stack", "uid-p", IncidentHistory(count=5, max_age=timedelta(hours=1)))
    long_ago = cond.rfc3339(cond.utcnow() - timedelta(hours=2))
    recent = cond.rfc3339(cond.utcnow() - timedelta(minutes=5))
    for name, state, when in (
        ("old", "Resolved", long_ago),
        ("new", "Resolved", recent),
        ("open", "Open", None),
    ):
        body = {
            "metadata": {"name": name, "namespace": "shop", "creationTimestamp": long_ago},
            "spec": {"healthPolicy": "stack"},
            "status": {"state": state} | ({"resolvedAt": when} if when else {}),
        }
        kube.objects[("incidents", "shop", name)] = body
        keeper.observe({"type": "ADDED"}, body)  # what the watch's first LIST delivers
    keeper.tidy(policy)
    await settle(keeper)
    keeper.tidy(policy)  # again at once: nothing (at most every TIDY_EVERY_S)
    await settle(keeper)
    assert sorted(k[2] for k in kube.objects) == ["new", "open"]
    assert [c for c in kube.calls if c[0] in ("list", "get")] == []
    assert [c for c in kube.calls if c[0] == "delete"] == [("delete", "incidents")]
    keeper.observe({"type": "DELETED"}, kube.objects.pop(("incidents", "shop", "new")))
    assert set(keeper.history[("shop", "stack")]) == {"open"}


async def test_a_reopened_incident_reopens_its_incident_and_spends_the_hand_resolution() -> None:
    kube = FakeKube()
    keeper = IncidentKeeper(kube)  # type: ignore[arg-type]
    port = keeper.port(POLICY)
    port.record(note("Opened"), CHECKS, ["db"], [])
    await settle(keeper)
    obj = incident_of(kube)
    obj["metadata"]["annotations"] = {"ops.stronghold.io/resolve": "bob"}
    keeper.observe({"type": "MODIFIED"}, obj)
    await settle(keeper)
    assert incident_of(kube)["status"]["state"] == "Resolved"
    assert port.hand("stack-20260101-120000") == li.Hand(resolved_by="bob")
    port.record(note("Resolved"), CHECKS, [], [])  # the policy closes it at its next round
    port.record(note("Opened", reopened=1), CHECKS, ["db"], [])  # ... and it comes back
    assert port.hand("stack-20260101-120000") == li.Hand()  # spent at once
    await settle(keeper)
    status = incident_of(kube)["status"]
    assert status["state"] == "Open" and "resolvedBy" not in status
    assert [e["type"] for e in status["timeline"]] == ["Detected", "Resolved", "Reopened"]
    # The spent annotation: ignored while its removal is on its way, then gone.
    keeper.observe(
        {"type": "MODIFIED"},
        {
            **obj,
            "metadata": {**obj["metadata"], "annotations": {"ops.stronghold.io/resolve": "bob"}},
        },
    )
    assert port.hand("stack-20260101-120000") is None
    assert incident_of(kube)["metadata"]["annotations"] == {}
    keeper.observe({"type": "MODIFIED"}, incident_of(kube))
    assert port.hand("stack-20260101-120000") is None and keeper._consumed == {}


async def test_folded_news_moves_the_incident_but_posts_no_event() -> None:
    """A shared target's storm tells it (logic/health/storm.py): counted, not posted."""
    import dataclasses

    kube = FakeKube()
    keeper = IncidentKeeper(kube)  # type: ignore[arg-type]
    port = keeper.port(POLICY)
    counted: list[str] = []
    for kind in ("Opened", "Resolved"):
        news = dataclasses.replace(note(kind), folded=lambda k=kind: counted.append(k))
        port.record(news, CHECKS, ["db"] if kind == "Opened" else [], [])
        await settle(keeper)
    assert incident_of(kube)["status"]["state"] == "Resolved"  # its status told the story
    assert counted == ["Opened", "Resolved"] and POSTED == []


GROUPED = {"incidentName": "stack-20260101-120000", "grouped": True}
TARGET = "postgres db:5432"


def joining(id_: str) -> li.News:
    """A member's opening: recorded on the lead (the round named it)."""
    return li.News("Opened", note("Opened", id_, **GROUPED).incident, "db", target=TARGET)


async def test_a_storm_is_one_incident_whose_members_cost_no_request() -> None:
    kube = FakeKube()
    keeper = IncidentKeeper(kube)  # type: ignore[arg-type]
    lead = keeper.port(POLICY)
    lead.record(li.News("Opened", note("Opened").incident, "db", target=TARGET), CHECKS, [], [])
    assert keeper.port(POLICY).lead(TARGET) == "stack-20260101-120000"
    await settle(keeper)
    before = len(kube.calls)
    for i in range(30):
        member = keeper.port(Policy("shop", f"p{i}", f"uid-{i}", POLICY.history))
        member.record(joining(f"p{i}-20260101-120001"), CHECKS, ["db"], [])
        member.record(note("Resolved", f"p{i}-20260101-120001", **GROUPED), CHECKS, [], [])
    await settle(keeper)
    calls = kube.calls[before:]
    assert [c for c in calls if c[0] != "patch"] == []  # no create, GET or LIST per member
    assert 1 <= len(calls) <= 3  # the lead's status, its writer merging the joins
    assert len([k for k in kube.objects if k[0] == "incidents"]) == 1
    group = incident_of(kube)["status"]["grouped"]
    assert group["target"] == TARGET and group["count"] == 30
    assert group["policies"] == [f"shop/p{i}" for i in range(li.MAX_GROUPED_NAMES)]

    # A restart: the next member to join reads the lead once and counts on from its status.
    again = IncidentKeeper(kube)  # type: ignore[arg-type]
    late = again.port(Policy("shop", "late", "uid-late", POLICY.history))
    late.record(joining("late-20260101-120100"), CHECKS, ["db"], [])
    await settle(again)
    assert incident_of(kube)["status"]["grouped"]["count"] == 31

    # The lead resolved: it leads no more; the next incident on the target has its own.
    lead.record(note("Resolved"), CHECKS, [], [])
    await settle(keeper)
    assert keeper.lead("shop", TARGET) is None
