"""Incident objects' pure logic (logic/incident.py), the status model against the CRD, the
acknowledgement stopping escalation (logic/health), and the service honouring the
annotations (services/health.py on in-memory fakes)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from stronghold_operator import conditions as cond
from stronghold_operator.logic import incident as li
from stronghold_operator.models.base import parse
from stronghold_operator.models.health import HealthPolicySpec, IncidentHistory
from stronghold_operator.models.incident import (
    MAX_EVIDENCE_USAGE,
    MAX_TIMELINE,
    CheckEvidence,
    Evidence,
    Grouped,
    IncidentStatus,
    PodResources,
    Restart,
    Rollout,
    TimelineEntry,
    WarningEvent,
    WorkloadUsage,
)
from stronghold_operator.probes.base import ProbeResult
from stronghold_operator.services import health as service
from tests.unit.test_health_logic import T0, all_ok, down, run, stack, web_ok
from tests.unit.test_health_service import WHERE, World

CRD = Path(__file__).resolve().parents[2] / "crds" / "incident.yaml"


def ts(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def aliases(model: type[BaseModel]) -> set[str]:
    return {f.alias or name for name, f in model.model_fields.items()}


# --- the model is the CRD ---------------------------------------------------------------------


def test_the_status_model_is_the_crd_status_schema() -> None:
    doc = yaml.safe_load(CRD.read_text())
    (version,) = doc["spec"]["versions"]
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert aliases(IncidentStatus) == set(status)
    assert aliases(TimelineEntry) == set(status["timeline"]["items"]["properties"])
    ev = status["evidence"]["properties"]
    assert aliases(Evidence) == set(ev)
    assert aliases(Rollout) == set(ev["rollouts"]["items"]["properties"])
    assert aliases(Restart) == set(ev["restarts"]["items"]["properties"])
    assert aliases(WarningEvent) == set(ev["warningEvents"]["items"]["properties"])
    assert aliases(CheckEvidence) == set(ev["checks"]["items"]["properties"])
    assert aliases(WorkloadUsage) == set(ev["usage"]["items"]["properties"])
    assert aliases(Grouped) == set(status["grouped"]["properties"])
    assert status["grouped"]["properties"]["policies"]["maxItems"] == li.MAX_GROUPED_NAMES
    assert ev["usage"]["maxItems"] == MAX_EVIDENCE_USAGE
    assert status["timeline"]["maxItems"] == MAX_TIMELINE
    columns = [
        c["name"].upper() for c in version["additionalPrinterColumns"] if not c.get("priority")
    ]
    assert columns == ["SEVERITY", "ROOT CAUSE", "STATE", "AGE", "DURATION", "ACK"]


def test_incident_history_defaults_and_bounds() -> None:
    spec = parse(HealthPolicySpec, {"checks": [{"name": "c", "memcached": {"address": "c:1"}}]})
    assert spec.incident_history == IncidentHistory(count=20, max_age=timedelta(days=30))
    custom = parse(
        HealthPolicySpec,
        {
            "checks": [{"name": "c", "memcached": {"address": "c:1"}}],
            "incidentHistory": {"count": 3, "maxAge": "2h"},
        },
    )
    assert custom.incident_history.count == 3
    assert custom.incident_history.max_age == timedelta(hours=2)


# --- names, durations, timeline ---------------------------------------------------------------


def test_object_name_is_the_id_or_a_unique_shortening() -> None:
    assert li.object_name("stack-20260101-120000") == "stack-20260101-120000"
    long_a = "a" * 250 + "-20260101-120000"
    long_b = "a" * 249 + "b-20260101-120000"
    na, nb = li.object_name(long_a), li.object_name(long_b)
    assert len(na) <= 253 and len(nb) <= 253 and na != nb and na.endswith("-20260101-120000")


def test_short_duration() -> None:
    assert [li.short_duration(s) for s in (5, 125, 3600, 3900, 200000)] == [
        "5s",
        "2m",
        "1h",
        "1h5m",
        "2d7h",
    ]


def test_timeline_is_bounded_and_keeps_the_first_entry() -> None:
    tl: list[dict[str, Any]] = []
    for i in range(MAX_TIMELINE + 30):
        tl = li.add(tl, "Detected" if i == 0 else "Escalated", f"e{i}", T0 + timedelta(seconds=i))
    assert len(tl) == MAX_TIMELINE
    assert tl[0]["message"] == "e0" and tl[-1]["message"] == f"e{MAX_TIMELINE + 29}"
    assert [TimelineEntry.model_validate(e).type for e in tl[:2]] == ["Detected", "Escalated"]


# --- the lifecycle from the policy's news -----------------------------------------------------


def news(kind: str, **incident: Any) -> li.News:
    base = {
        "id": "stack-20260101-120000",
        "severity": "P2",
        "maxSeverity": "P2",
        "rootCause": "cache",
        "summary": "cache: down",
        "startedAt": ts(0),
        "escalationLevel": 1,
    }
    return li.News(
        kind, base | incident, f"{kind} message", int(incident.get("escalationLevel", 1))
    )


def test_open_severity_change_escalation_resolve() -> None:
    status = li.opened(news("Opened"), ["cache"], T0, {"gatheredAt": ts(0)})
    assert status["state"] == "Open" and status["affectedChecks"] == ["cache"]
    IncidentStatus.model_validate(status)
    up = li.updated(
        status, news("SeverityChanged", severity="P1", maxSeverity="P1"), ["cache", "web"], T0
    )
    assert up["severity"] == "P1" and up["maxSeverity"] == "P1"
    assert up["affectedChecks"] == ["cache", "web"]
    status |= up
    status |= li.updated(
        status, news("Escalated", escalationLevel=2), [], T0 + timedelta(minutes=31)
    )
    assert status["escalationLevel"] == 2
    resolved = li.updated(status, news("Resolved"), [], T0 + timedelta(minutes=75))
    assert resolved["state"] == "Resolved" and resolved["resolvedBy"] == "operator"
    assert resolved["durationSeconds"] == 75 * 60 and resolved["duration"] == "1h15m"
    status |= resolved
    assert [e["type"] for e in status["timeline"]] == [
        "Detected",
        "SeverityChanged",
        "Escalated",
        "Resolved",
    ]
    final = IncidentStatus.model_validate(status)
    assert final.state == "Resolved" and final.max_severity == "P1"
    # Resolved takes no more news.
    assert li.updated(status, news("Escalated", escalationLevel=3), [], T0) == {}


def test_ack_then_resolve_by_hand() -> None:
    status = li.opened(news("Opened"), ["cache"], T0)
    assert li.by_hand(status, li.Hand(), T0) == {}
    acked = li.by_hand(status, li.Hand(acknowledged_by="alice"), T0 + timedelta(minutes=3))
    assert acked["state"] == "Acknowledged" and acked["acknowledgedBy"] == "alice"
    status |= acked
    assert li.seconds_between(status, "acknowledgedAt") == 180
    # Seen again (every watch event): nothing new.
    assert li.by_hand(status, li.Hand(acknowledged_by="alice"), T0 + timedelta(minutes=4)) == {}
    done = li.by_hand(status, li.Hand("alice", resolved_by="bob"), T0 + timedelta(minutes=10))
    assert done["state"] == "Resolved" and done["resolvedBy"] == "bob"
    status |= done
    assert [e["type"] for e in status["timeline"]] == ["Detected", "Acknowledged", "Resolved"]
    assert li.by_hand(status, li.Hand("alice", "bob"), T0 + timedelta(minutes=11)) == {}


def test_hand_of_reads_the_annotations() -> None:
    ack, res = "ops.stronghold.io/ack", "ops.stronghold.io/resolve"
    assert li.hand_of(None, ack, res) == li.Hand()
    assert li.hand_of({ack: " alice "}, ack, res) == li.Hand("alice")
    assert li.hand_of({res: ""}, ack, res) == li.Hand(None, "someone")


# --- escalation: acknowledged stops it ---------------------------------------------------------


def test_an_acknowledged_incident_stops_escalating() -> None:
    policy = stack()
    bad = all_ok() | {"db": down(), "web": web_ok(database="disconnected")}
    status, _ = run(policy, {}, bad, T0)
    status, ev = run(policy, status, bad, T0 + timedelta(minutes=31))
    assert [(n.kind, n.level) for n in ev.notifications] == [("Escalated", 2)]
    status["incident"] = {**status["incident"], "acknowledgedBy": "alice"}
    status, ev = run(policy, status, bad, T0 + timedelta(minutes=61))
    assert ev.notifications == [] and status["incident"]["escalationLevel"] == 2
    assert status["incident"]["acknowledgedBy"] == "alice"  # kept round after round


# --- retention -------------------------------------------------------------------------------


def obj(name: str, state: str, resolved_minutes: float | None) -> dict[str, Any]:
    status: dict[str, Any] = {"state": state}
    if resolved_minutes is not None:
        status["resolvedAt"] = ts(resolved_minutes)
    return {"metadata": {"name": name, "creationTimestamp": ts(0)}, "status": status}


def test_retention_by_count_and_age_never_open_ones() -> None:
    items = [
        obj("open", "Open", None),
        obj("acked", "Acknowledged", None),
        obj("r1", "Resolved", 10),
        obj("r2", "Resolved", 20),
        obj("r3", "Resolved", 30),
    ]
    now = T0 + timedelta(minutes=40)
    assert sorted(li.to_prune(items, 2, timedelta(days=1), now)) == ["r1"]
    assert sorted(li.to_prune(items, 10, timedelta(minutes=15), now)) == ["r1", "r2"]
    assert sorted(li.to_prune(items, 0, timedelta(days=1), now)) == ["r1", "r2", "r3"]


# --- evidence --------------------------------------------------------------------------------


def rs(name: str, owner: str, minutes: float, revision: str = "1") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": ts(minutes),
            "annotations": {"deployment.kubernetes.io/revision": revision},
            "ownerReferences": [{"kind": "Deployment", "name": owner}],
        }
    }


def test_rollouts_of_the_last_24_hours_newest_first_bounded() -> None:
    now = T0 + timedelta(hours=30)
    replicasets = [rs("web-1", "web", 0), rs("web-2", "web", 60 * 29, "2")]
    replicasets += [rs(f"api-{i}", "api", 60 * 28 + i, str(i)) for i in range(15)]
    replicasets.append({"metadata": {"name": "bare", "creationTimestamp": ts(60 * 29)}})
    revisions = [
        {
            "metadata": {
                "name": "db-abc",
                "creationTimestamp": ts(60 * 29 + 30),
                "ownerReferences": [{"kind": "StatefulSet", "name": "db"}],
            },
            "revision": 4,
        }
    ]
    out = li.rollouts(replicasets, revisions, now)
    assert len(out) == 10
    assert out[0] == {
        "kind": "StatefulSet",
        "name": "db",
        "revision": "4",
        "object": "ControllerRevision/db-abc",
        "at": ts(60 * 29 + 30),
    }
    assert out[1]["name"] == "web" and out[1]["revision"] == "2"
    assert all(r["object"] != "ReplicaSet/web-1" for r in out)  # older than 24 h
    assert all(r["name"] != "bare" for r in out)


def pod(name: str, restarts: int, reason: str | None, exit_code: int = 1) -> dict[str, Any]:
    cs: dict[str, Any] = {"name": "app", "restartCount": restarts}
    if reason:
        cs["lastState"] = {
            "terminated": {"reason": reason, "exitCode": exit_code, "finishedAt": ts(1)}
        }
    return {"metadata": {"name": name}, "status": {"containerStatuses": [cs]}}


def test_restarts_oomkilled_first() -> None:
    pods = [pod("calm", 0, None), pod("flaky", 5, "Error"), pod("oom", 1, "OOMKilled", 137)]
    out = li.restarts(pods)
    assert [(r["pod"], r["lastReason"]) for r in out] == [("oom", "OOMKilled"), ("flaky", "Error")]
    assert out[0]["exitCode"] == 137 and out[0]["finishedAt"] == ts(1)


def test_warning_events_recent_redacted_bounded() -> None:
    secret = "s3cr3t-value"
    events = [
        {
            "type": "Warning",
            "reason": "BackOff",
            "message": f"pull failed with {secret} " + "x" * 500,
            "count": 3,
            "lastTimestamp": ts(50),
            "involvedObject": {"kind": "Pod", "name": "web-1"},
        },
        {"type": "Normal", "reason": "Pulled", "lastTimestamp": ts(55)},
        {"type": "Warning", "reason": "Old", "lastTimestamp": ts(-120)},
    ]
    out = li.warning_events(events, T0 + timedelta(minutes=60), [secret])
    assert len(out) == 1 and out[0]["object"] == "Pod/web-1" and out[0]["count"] == 3
    assert secret not in out[0]["message"] and len(out[0]["message"]) <= li.MAX_TEXT


def test_failing_checks_measurements_bounded_and_redacted() -> None:
    secret = "hunter2-password"
    checks = [
        {"name": "ok", "state": "Healthy"},
        {
            "name": "db",
            "type": "postgres",
            "state": "Critical",
            "reason": "Unreachable",
            "message": f"password {secret} rejected",
            "measurements": {"a": 1, "big": "y" * 5000, "c": secret},
        },
    ]
    (out,) = li.failing_checks(checks, [secret])
    assert out["measurements"] == {"a": 1, "truncated": True}
    assert secret not in str(out)
    ev = li.evidence(
        replicasets=[],
        revisions=[],
        pods=[],
        events=[],
        checks=checks,
        errors=["events: 403 Forbidden"],
        now=T0,
        secrets=[secret],
    )
    Evidence.model_validate(ev)


# --- the service honours the annotations -------------------------------------------------------


@dataclass
class FakeIncidents:
    hands: dict[str, li.Hand] = field(default_factory=dict)
    recorded: list[li.News] = field(default_factory=list)

    def hand(self, name: str) -> li.Hand | None:
        return self.hands.get(name)

    def record(
        self,
        news: li.News,
        checks: Sequence[Mapping[str, Any]],
        affected: Sequence[str],
        secrets: Sequence[str],
    ) -> None:
        self.recorded.append(news)


def cache_policy(**extra: Any) -> HealthPolicySpec:
    spec = {
        "interval": "30s",
        "failureThreshold": 1,
        "checks": [{"name": "cache", "memcached": {"address": "cache:11211"}}],
    }
    return parse(HealthPolicySpec, spec | extra)


async def rounds(
    w: World, port: FakeIncidents, policy: HealthPolicySpec, status: dict[str, Any], at: datetime
) -> dict[str, Any]:
    ports = w.ports()
    from dataclasses import replace

    ports = replace(ports, incidents=port, clock=lambda: at)
    r = await service.run_round(policy, status, WHERE, ports)
    return status | r.fields


async def test_the_round_names_the_incident_object_and_honours_ack_and_resolve() -> None:
    w, port = World(), FakeIncidents()
    w.prober.results = {"cache": ProbeResult.failed("Unreachable", "connection refused")}
    policy = cache_policy(alerting={"escalation": [{"after": "1m", "level": 2}]})
    status = await rounds(w, port, policy, {}, T0)
    name = status["incident"]["incidentName"]
    assert name == status["incident"]["id"] and [n.kind for n in port.recorded] == ["Opened"]
    port.hands[name] = li.Hand(acknowledged_by="alice")
    status = await rounds(w, port, policy, status, T0 + timedelta(minutes=5))
    assert status["incident"]["acknowledgedBy"] == "alice"
    assert [n.kind for n in port.recorded] == ["Opened"]  # no escalation once acknowledged
    port.hands[name] = li.Hand("alice", "bob")
    status = await rounds(w, port, policy, status, T0 + timedelta(minutes=6))
    # Closed by hand; the cache is still down, so flap damping re-opens the same incident.
    assert [n.kind for n in port.recorded] == ["Opened", "Resolved", "Opened"]
    assert "resolved by hand by bob" in port.recorded[1].message
    assert port.recorded[2].incident["reopened"] == 1
    assert status["incident"]["id"] == name and status["incident"]["reopened"] == 1
    assert any(e[1] == "IncidentResolved" for e in w.events)
    # Without flap damping's re-opening, a new incident opens instead.
    w2, port2 = World(), FakeIncidents()
    w2.prober.results = w.prober.results
    plain = cache_policy(flapDamping={"reopenWithin": "0s"})
    first = await rounds(w2, port2, plain, {}, T0)
    port2.hands[first["incident"]["incidentName"]] = li.Hand(resolved_by="bob")
    later = await rounds(w2, port2, plain, first, T0 + timedelta(minutes=1))
    assert later["incident"]["incidentName"] != first["incident"]["incidentName"]
    assert later["recentIncidents"][0]["id"] == first["incident"]["id"]


def test_a_reopened_incident_is_open_again_with_its_resolution_cleared() -> None:
    status = li.opened(news("Opened"), ["cache"], T0)
    status |= li.by_hand(status, li.Hand("alice", "bob"), T0 + timedelta(minutes=2))
    back = li.reopened(
        status, news("Opened", reopened=1, severity="P1"), ["web"], T0 + timedelta(minutes=3)
    )
    assert back["state"] == "Acknowledged"  # it was acknowledged before
    assert back["resolvedAt"] is None and back["resolvedBy"] is None and back["duration"] is None
    assert back["maxSeverity"] == "P1" and back["affectedChecks"] == ["cache", "web"]
    assert [e["type"] for e in back["timeline"]][-2:] == ["Resolved", "Reopened"]


# --- properties ------------------------------------------------------------------------------

STATES = st.sampled_from(["Open", "Acknowledged", "Resolved"])


@given(n=st.integers(min_value=1, max_value=200), limit=st.integers(min_value=2, max_value=60))
def test_timeline_bound_property(n: int, limit: int) -> None:
    tl: list[dict[str, Any]] = []
    for i in range(n):
        tl = li.add(tl, "T", str(i), T0 + timedelta(seconds=i), limit)
        assert len(tl) <= limit
        assert tl[0]["message"] == "0" and tl[-1]["message"] == str(i)


@given(
    items=st.lists(st.tuples(STATES, st.integers(min_value=0, max_value=600)), max_size=40),
    count=st.integers(min_value=0, max_value=10),
    age=st.integers(min_value=1, max_value=600),
)
def test_retention_property(items: list[tuple[str, int]], count: int, age: int) -> None:
    objs = [
        obj(f"i{k}", state, m if state == "Resolved" else None)
        for k, (state, m) in enumerate(items)
    ]
    now = T0 + timedelta(minutes=600)
    pruned = set(li.to_prune(objs, count, timedelta(minutes=age), now))
    kept = [o for o in objs if o["metadata"]["name"] not in pruned]
    assert all(o["status"]["state"] == "Resolved" for o in objs if o["metadata"]["name"] in pruned)
    resolved_kept = [o for o in kept if o["status"]["state"] == "Resolved"]
    assert len(resolved_kept) <= count
    for o in resolved_kept:
        when = cond.parse_rfc3339(o["status"]["resolvedAt"])
        assert when is not None and now - when <= timedelta(minutes=age)


# --- resource usage of the workloads ------------------------------------------------------


def owned(name: str, kind: str, owner: str, phase: str = "Running") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "ownerReferences": [{"kind": kind, "name": owner}]},
        "status": {"phase": phase},
    }


def test_usage_joins_pods_owners_and_metrics_with_percentages() -> None:
    replicasets = [owned("web-5d9f", "Deployment", "web"), owned("old-1", "Deployment", "old")]
    pods = [
        owned("web-5d9f-a", "ReplicaSet", "web-5d9f"),
        owned("web-5d9f-b", "ReplicaSet", "web-5d9f"),
        owned("web-5d9f-new", "ReplicaSet", "web-5d9f", "Pending"),  # no metrics yet
        owned("web-5d9f-done", "ReplicaSet", "web-5d9f", "Succeeded"),  # not live
        owned("db-0", "StatefulSet", "db"),
        owned("agent-x", "DaemonSet", "agent"),
        owned("bare-rs-a", "ReplicaSet", "bare-rs"),  # a ReplicaSet of no Deployment
        owned("job-a", "Job", "job"),
        {"metadata": {"name": "naked"}, "status": {"phase": "Running"}},
    ]
    metrics = {
        "web-5d9f-a": (0.1, 100 * 2**20),
        "web-5d9f-b": (0.15, 50 * 2**20),
        "db-0": (0.9, 2**30),
        "agent-x": (0.01, 2**20),
        "bare-rs-a": (5.0, 0.0),
        "job-a": (5.0, 0.0),
        "naked": (5.0, 0.0),
    }
    resources = {
        "web-5d9f-a": PodResources(0.25, 256 * 2**20, 0.5, None),
        "web-5d9f-b": PodResources(0.25, 256 * 2**20, 0.5, 512 * 2**20),
        "db-0": PodResources(None, 2**31),  # a container without a CPU request
    }
    out = li.usage(pods, replicasets, metrics, resources, named=[("StatefulSet", "db")])
    assert [(u["kind"], u["name"]) for u in out] == [
        ("StatefulSet", "db"),  # the policy's first
        ("Deployment", "web"),  # then by CPU
        ("DaemonSet", "agent"),
    ]
    db, web, agent = out
    assert db["policyTarget"] and not web["policyTarget"]
    assert "cpuPercentOfRequests" not in db and db["memoryPercentOfRequests"] == 50
    assert web == {
        "kind": "Deployment",
        "name": "web",
        "pods": 3,
        "measuredPods": 2,
        "policyTarget": False,
        "cpuMillicores": 250,
        "memoryBytes": 150 * 2**20,
        "cpuPercentOfRequests": 50,
        "memoryPercentOfRequests": 29,
        "cpuPercentOfLimits": 25,  # one pod has no memory limit: no memory percentage of it
    }
    assert "cpuPercentOfRequests" not in agent  # no resources known for it
    for u in out:
        WorkloadUsage.model_validate(u)


def test_usage_lists_a_named_workload_without_metrics_and_is_bounded() -> None:
    replicasets = [owned(f"d{i}-rs", "Deployment", f"d{i}") for i in range(9)]
    pods = [owned(f"d{i}-rs-p", "ReplicaSet", f"d{i}-rs") for i in range(9)]
    metrics = {f"d{i}-rs-p": (i / 10, 1.0) for i in range(9)}
    named = [("Deployment", "gone"), ("Deployment", "d1")]
    out = li.usage(pods, replicasets, metrics, {}, named)
    assert len(out) == MAX_EVIDENCE_USAGE
    assert [u["name"] for u in out] == ["gone", "d1", "d8", "d7", "d6"]
    assert out[0] == {
        "kind": "Deployment",
        "name": "gone",
        "pods": 0,
        "measuredPods": 0,
        "policyTarget": True,
    }
    # Not measured and not named: left out (a listing of pods is not usage).
    assert li.usage(pods, replicasets, {}, {}, ()) == []


def test_evidence_has_usage_only_when_the_metrics_were_read() -> None:
    kw: dict[str, Any] = {
        "replicasets": [],
        "revisions": [],
        "pods": [],
        "events": [],
        "checks": [],
        "now": T0,
    }
    unread = li.evidence(errors=["podmetrics: metrics.k8s.io/v1beta1 answered 404"], **kw)
    assert "usage" not in unread and unread["errors"][0].startswith("podmetrics")
    read = li.evidence(errors=[], metrics={}, named=[("Deployment", "web")], **kw)
    assert Evidence.model_validate(read).usage[0].name == "web"


def test_the_policy_names_its_workloads() -> None:
    spec = parse(
        HealthPolicySpec,
        {
            "checks": [
                {"name": "r", "resources": {"targetRef": {"kind": "Deployment", "name": "web"}}},
                {
                    "name": "c",
                    "resources": {
                        "targetRef": {"kind": "ComposeService", "project": "p", "service": "s"}
                    },
                },
                {
                    "name": "l",
                    "logs": {"pods": {"targetRef": {"kind": "StatefulSet", "name": "db"}}},
                },
            ],
            "remediation": {
                "actions": [
                    {
                        "name": "restart",
                        "when": {"checks": ["r"]},
                        "rolloutRestart": {"name": "api"},
                    },
                    {
                        "name": "again",
                        "when": {"checks": ["r"]},
                        "rolloutRestart": {"name": "web"},
                    },
                ]
            },
        },
    )
    assert spec.workloads() == [
        ("Deployment", "web"),
        ("StatefulSet", "db"),
        ("Deployment", "api"),
    ]
