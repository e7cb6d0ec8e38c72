"""The kopf indexes that replace per-pass LISTs: the index functions (logic/indexes.py) are
pure, and the ports (platforms/indexes.py) answer from what kopf makes of their results."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from stronghold_operator.logic import indexes as index_fns
from stronghold_operator.models.common import MAINTENANCE_ANNOTATION, MAINTENANCE_WINDOWS_ANNOTATION
from stronghold_operator.models.scaling import Claim
from stronghold_operator.platforms import indexes

SPEC = {"targetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3}
COMPOSE = {"targetRef": {"kind": "ComposeService", "project": "fs", "service": "web"}}


def meta(name: str, ns: str = "ns", **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": ns, "uid": f"uid-{ns}-{name}", **extra}


def index_of(results: Iterable[Mapping[Any, Any]]) -> dict[Any, list[Any]]:
    """What kopf keeps of index-function results: key -> the values of every object."""
    out: dict[Any, list[Any]] = {}
    for result in results:
        for key, value in result.items():
            out.setdefault(key, []).append(value)
    return out


def test_an_hpa_is_indexed_under_the_workload_it_scales() -> None:
    hpa = {
        "metadata": meta("web-hpa"),
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}},
    }
    assert index_fns.hpa_target(hpa) == {("ns", "Deployment", "web"): "web-hpa"}
    assert index_fns.hpa_target({"metadata": meta("broken"), "spec": {}}) == {}


def test_a_policy_claims_its_target_and_an_invalid_one_claims_nothing() -> None:
    body = {"metadata": meta("p", creationTimestamp="2026-01-01T00:00:00Z"), "spec": SPEC}
    claim = Claim("2026-01-01T00:00:00Z", "ns", "p", "uid-ns-p")
    assert index_fns.scaling_claim(body) == {("ns", "Deployment", "web"): claim}
    # {} and not None: kopf keeps an object's old value when its index function says None,
    # so a policy whose spec turned invalid would go on claiming its old target.
    assert index_fns.scaling_claim({"metadata": meta("p"), "spec": {"maxReplicas": "x"}}) == {}


def test_a_compose_service_is_one_target_across_namespaces() -> None:
    a = index_fns.scaling_claim({"metadata": meta("p", "a"), "spec": {**COMPOSE, "maxReplicas": 2}})
    b = index_fns.scaling_claim({"metadata": meta("p", "b"), "spec": {**COMPOSE, "maxReplicas": 2}})
    assert a.keys() == b.keys()  # no namespace in the scope
    w1 = index_fns.scaling_claim({"metadata": meta("p", "a"), "spec": SPEC})
    w2 = index_fns.scaling_claim({"metadata": meta("p", "b"), "spec": SPEC})
    assert w1.keys() != w2.keys()  # a workload's scope is its namespace


def test_indexed_autoscalers_answer_by_target() -> None:
    hpas = index_of(
        [
            {("ns", "Deployment", "web"): "b-hpa"},
            {("ns", "Deployment", "web"): "a-hpa"},
            {("other", "Deployment", "web"): "x"},
        ]
    )
    old = Claim("2025-01-01T00:00:00Z", "ns", "old", "u0")
    new = Claim("2026-01-01T00:00:00Z", "ns", "new", "u1")
    port = indexes.IndexedAutoscalers(hpas, {("ns", "Deployment", "web"): [new, old]})
    assert asyncio.run(port.hpas("ns", "Deployment", "web")) == ["a-hpa", "b-hpa"]
    assert asyncio.run(port.hpas("ns", "StatefulSet", "web")) == []
    assert asyncio.run(port.claims(("ns", "Deployment", "web"))) == [old, new]  # oldest first
    empty = indexes.IndexedAutoscalers(None, None)  # before kopf handed any index over
    assert asyncio.run(empty.claims(("ns", "Deployment", "web"))) == []


def test_a_covered_entry_keeps_only_what_a_window_reads() -> None:
    body = {
        "metadata": meta(
            "web",
            labels={"tier": "web"},
            annotations={
                MAINTENANCE_ANNOTATION: "w1",
                MAINTENANCE_WINDOWS_ANNOTATION: "w1",
                "kubectl.kubernetes.io/last-applied-configuration": "{...}",
            },
            managedFields=[{"manager": "kubectl"}],
            deletionTimestamp="2026-01-01T00:00:00Z",
        ),
        "spec": SPEC,
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    (ns, entry), *_ = index_fns.covered_entry(body).items()
    assert ns == "ns"
    assert entry == {
        "metadata": {
            "name": "web",
            "namespace": "ns",
            "labels": {"tier": "web"},
            "annotations": {MAINTENANCE_ANNOTATION: "w1", MAINTENANCE_WINDOWS_ANNOTATION: "w1"},
            "deletionTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {"targetRef": {"kind": "Deployment", "name": "web"}},
    }
    bare = index_fns.covered_entry({"metadata": meta("hp"), "spec": {"checks": []}})
    assert bare["ns"] == {
        "metadata": {"name": "hp", "namespace": "ns", "labels": {}, "annotations": {}}
    }


def test_indexed_covered_lists_copies_of_one_namespace() -> None:
    hp = index_fns.covered_entry({"metadata": meta("hp", labels={"a": "b"})})
    other = index_fns.covered_entry({"metadata": meta("hp", "elsewhere")})
    covered = index_of([hp, other])
    port = indexes.IndexedCovered(None, "ns", {"healthpolicies": covered, "backupschedules": None})  # type: ignore[arg-type]
    listed = asyncio.run(port.list("healthpolicies"))
    assert listed is not None and [o["metadata"]["name"] for o in listed] == ["hp"]
    listed[0]["metadata"]["annotations"]["x"] = "y"  # the service updates what it wrote
    assert covered["ns"][0]["metadata"]["annotations"] == {}  # kopf's value is untouched
    assert asyncio.run(port.list("backupschedules")) is None  # not indexed: no such kind
    assert asyncio.run(port.list("scalingpolicies")) is None
