"""Pre/post maintenance snapshots and their comparison (logic/snapshot.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from stronghold_operator.logic import snapshot as s

NOW = datetime(2026, 3, 1, 1, tzinfo=UTC)


def deployment(replicas: int, image: str, env: str = "a") -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "spec": {
            "replicas": replicas,
            "template": {
                "spec": {"containers": [{"name": "web", "image": image, "env": [{"name": env}]}]}
            },
        },
    }


def pod(image_id: str) -> dict[str, Any]:
    return {"status": {"containerStatuses": [{"name": "web", "imageID": image_id}]}}


def health_status(size: int, messages: int, severity: str = "None") -> dict[str, Any]:
    return {
        "severity": severity,
        "checks": [
            {
                "name": "db",
                "type": "postgres",
                "measurements": {"dbSizeBytes": size, "connectionsUsed": 7, "maxConnections": 100},
            },
            {
                "name": "mq",
                "type": "rabbitmq",
                "measurements": {
                    "queues": [
                        {"name": "celery", "messages": messages, "consumers": 2},
                        {"name": "gone", "missing": True},
                    ]
                },
            },
            {"name": "web", "type": "http", "measurements": {"urls": []}},
        ],
    }


def snap(
    replicas: int = 2,
    image: str = "web:1",
    size: int = 1000,
    messages: int = 0,
    severity: str = "None",
    digest: str = "sha256:aa",
    env: str = "a",
) -> s.Snapshot:
    wl = s.workload_state(deployment(replicas, image, env), [pod(digest)])
    return s.combine(
        [
            s.Snapshot(NOW, workloads={"Deployment/web": wl}),
            s.from_health_status("stack", health_status(size, messages, severity), NOW),
        ],
        NOW,
    )


def test_extraction_from_api_objects_and_health_status() -> None:
    sn = snap()
    wl = sn.workloads["Deployment/web"]
    assert wl.replicas == 2 and wl.images == {"web": "web:1"}
    assert wl.digests == {"web": "sha256:aa"} and wl.config_hash and len(wl.config_hash) == 16
    assert sn.databases == {"stack/db": s.DatabaseState(1000, 7, 100)}
    assert sn.queues == {"stack/mq/celery": s.QueueState(0, 2)}  # a missing queue is skipped
    assert sn.health == {"stack": "None"}
    assert "1 workload(s), 1 database(s), 1 queue(s)" in sn.summary()


def test_identical_snapshots_have_no_differences() -> None:
    assert s.compare(snap(), snap()) == []


def test_each_kind_of_difference() -> None:
    before = snap()
    after = snap(replicas=3, image="web:2", size=1500, messages=12, severity="P2")
    kinds = {d.kind: d for d in s.compare(before, after, fail_on=["QueueNotEmpty"])}
    assert set(kinds) == {
        "ReplicasChanged",
        "ImageChanged",
        "ConfigChanged",
        "DatabaseSizeChanged",
        "QueueNotEmpty",
        "HealthWorse",
    }
    assert (kinds["ReplicasChanged"].before, kinds["ReplicasChanged"].after) == ("2", "3")
    assert kinds["QueueNotEmpty"].failing and not kinds["ReplicasChanged"].failing
    assert "+50.0%" in kinds["DatabaseSizeChanged"].message
    assert kinds["HealthWorse"].after == "P2"


def test_same_tag_new_digest_is_an_image_change() -> None:
    diffs = s.compare(snap(digest="sha256:aa"), snap(digest="sha256:bb"))
    assert [d.kind for d in diffs] == ["ImageChanged"]
    assert "digests" in diffs[0].message


def test_config_change_without_image_change() -> None:
    assert [d.kind for d in s.compare(snap(env="a"), snap(env="b"))] == ["ConfigChanged"]


def test_database_size_within_tolerance_is_not_reported() -> None:
    assert s.compare(snap(size=1000), snap(size=1050), database_tolerance_percent=10) == []
    shrunk = s.compare(snap(size=1000), snap(size=500), database_tolerance_percent=10)
    assert [d.kind for d in shrunk] == ["DatabaseSizeChanged"] and "-50.0%" in shrunk[0].message


def test_missing_workload_and_database() -> None:
    before = snap()
    after = s.Snapshot(NOW, health={"stack": "None"})
    kinds = [d.kind for d in s.compare(before, after, fail_on=["WorkloadMissing"])]
    assert kinds == ["WorkloadMissing", "DatabaseMissing"]


def test_better_health_is_not_a_difference() -> None:
    assert s.compare(snap(severity="P1"), snap(severity="None")) == []


def test_json_round_trip() -> None:
    sn = snap(messages=3)
    assert s.Snapshot.from_json(sn.to_json()) == sn


def test_severity_rank_order() -> None:
    ranks = [s.severity_rank(x) for x in (None, "None", "P4", "P3", "P2", "P1")]
    assert ranks == [0, 0, 1, 2, 3, 4]


@given(
    st.integers(0, 10),
    st.integers(0, 10),
    st.integers(1, 10**9),
    st.integers(1, 10**9),
    st.integers(0, 100),
    st.floats(0, 100),
)
def test_compare_properties(r1: int, r2: int, s1: int, s2: int, q: int, tol: float) -> None:
    a, b = snap(replicas=r1, size=s1), snap(replicas=r2, size=s2, messages=q)
    diffs = s.compare(a, b, fail_on=["QueueNotEmpty"], database_tolerance_percent=tol)
    kinds = [d.kind for d in diffs]
    assert ("ReplicasChanged" in kinds) == (r1 != r2)
    assert ("QueueNotEmpty" in kinds) == (q > 0)
    assert ("DatabaseSizeChanged" in kinds) == (abs(100 * (s2 - s1) / s1) > tol)
    assert all(d.failing == (d.kind == "QueueNotEmpty") for d in diffs)
    # Compared with itself only a non-empty queue is reported (it is a fact about "after").
    assert [d.kind for d in s.compare(b, b)] == (["QueueNotEmpty"] if q else [])
