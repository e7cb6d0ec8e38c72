"""State snapshots before a maintenance window and their comparison afterwards. Pure.

A snapshot records what the guide's pre-maintenance script writes to a log file, as data:
per workload (the Deployments/StatefulSets the covered ScalingPolicies target) replicas,
images, image digests and a hash of the pod template; per database (PostgreSQL checks of
the covered HealthPolicies) size, connections and max_connections; per queue (RabbitMQ checks)
depth and consumers; per HealthPolicy its incident severity. Post-checks take a second
snapshot and :func:`compare` lists the differences.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from stronghold_operator import conditions as cond

__all__ = [
    "DatabaseState",
    "Difference",
    "QueueState",
    "Snapshot",
    "WorkloadState",
    "combine",
    "compare",
    "from_health_status",
    "severity_rank",
    "workload_state",
]

SNAPSHOT_KEY = "snapshot.json"
# Severity order of HealthPolicy incidents ("None" = no incident).
_SEVERITY_RANK = {"None": 0, "P4": 1, "P3": 2, "P2": 3, "P1": 4}


def severity_rank(severity: str | None) -> int:
    """0 for no incident up to 4 for P1; unknown values rank like P4 (worth a look)."""
    if severity is None:
        return 0
    return _SEVERITY_RANK.get(severity, 1)


@dataclass(frozen=True)
class WorkloadState:
    replicas: int | None = None
    images: dict[str, str] = field(default_factory=dict)  # container -> image
    digests: dict[str, str] = field(default_factory=dict)  # container -> imageID of a pod
    config_hash: str | None = None  # sha256 of the pod template, first 16 hex digits


@dataclass(frozen=True)
class DatabaseState:
    size_bytes: int | None = None
    connections: int | None = None
    max_connections: int | None = None


@dataclass(frozen=True)
class QueueState:
    messages: int | None = None
    consumers: int | None = None


@dataclass(frozen=True)
class Snapshot:
    taken_at: datetime
    workloads: dict[str, WorkloadState] = field(default_factory=dict)  # "Deployment/web"
    databases: dict[str, DatabaseState] = field(default_factory=dict)  # "<policy>/<check>"
    queues: dict[str, QueueState] = field(default_factory=dict)  # "<policy>/<check>/<queue>"
    health: dict[str, str] = field(default_factory=dict)  # HealthPolicy -> severity

    def to_json(self) -> str:
        data = asdict(self)
        data["taken_at"] = cond.rfc3339(self.taken_at)
        return json.dumps(data, sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Snapshot:
        data = json.loads(text)
        return cls(
            taken_at=datetime.fromisoformat(data["taken_at"].replace("Z", "+00:00")),
            workloads={k: WorkloadState(**v) for k, v in data.get("workloads", {}).items()},
            databases={k: DatabaseState(**v) for k, v in data.get("databases", {}).items()},
            queues={k: QueueState(**v) for k, v in data.get("queues", {}).items()},
            health={str(k): str(v) for k, v in data.get("health", {}).items()},
        )

    def merged(self, other: Snapshot) -> Snapshot:
        return Snapshot(
            taken_at=max(self.taken_at, other.taken_at),
            workloads={**self.workloads, **other.workloads},
            databases={**self.databases, **other.databases},
            queues={**self.queues, **other.queues},
            health={**self.health, **other.health},
        )

    def summary(self) -> str:
        return (
            f"{len(self.workloads)} workload(s), {len(self.databases)} database(s), "
            f"{len(self.queues)} queue(s), {len(self.health)} health polic(ies)"
        )


@dataclass(frozen=True)
class Difference:
    """One thing that is not as it was; ``failing`` when the spec's ``failOn`` lists it."""

    kind: str
    target: str
    before: str
    after: str
    message: str
    failing: bool = False

    def to_status(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "target": self.target,
            "before": self.before,
            "after": self.after,
            "message": self.message,
            "failing": self.failing,
        }


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in sorted(value.items()))
    return str(value)


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def compare(
    pre: Snapshot,
    post: Snapshot,
    fail_on: Iterable[str] = (),
    database_tolerance_percent: float = 10.0,
) -> list[Difference]:
    """Differences between the snapshot before the window and the one after, sorted."""
    failing = set(fail_on)
    found = [
        *_workload_changes(pre, post),
        *_database_changes(pre, post, database_tolerance_percent),
        *_queue_changes(pre, post),
        *_health_changes(pre, post),
    ]
    return [replace(d, failing=d.kind in failing) for d in found]


def _diff(kind: str, target: str, before: Any, after: Any, message: str) -> Difference:
    return Difference(kind, target, _text(before), _text(after), message)


def _workload_changes(pre: Snapshot, post: Snapshot) -> Iterator[Difference]:
    for name in sorted(pre.workloads.keys() | post.workloads.keys()):
        a, b = pre.workloads.get(name), post.workloads.get(name)
        if b is None:
            yield _diff("WorkloadMissing", name, a and a.replicas, None, f"{name} no longer exists")
        elif a is None:
            yield _diff(
                "WorkloadAdded", name, None, b.replicas, f"{name} appeared during the window"
            )
        else:
            yield from _workload_diff(name, a, b)


def _workload_diff(name: str, a: WorkloadState, b: WorkloadState) -> Iterator[Difference]:
    if a.replicas != b.replicas:
        msg = f"{name}: replicas {a.replicas} -> {b.replicas}"
        yield _diff("ReplicasChanged", name, a.replicas, b.replicas, msg)
    if a.images != b.images:
        yield _diff("ImageChanged", name, a.images, b.images, f"{name}: images changed")
    elif a.digests and b.digests and a.digests != b.digests:
        msg = f"{name}: same image tags, different digests"
        yield _diff("ImageChanged", name, a.digests, b.digests, msg)
    if a.config_hash and b.config_hash and a.config_hash != b.config_hash:
        msg = f"{name}: pod template changed"
        yield _diff("ConfigChanged", name, a.config_hash, b.config_hash, msg)


def _database_changes(pre: Snapshot, post: Snapshot, tolerance: float) -> Iterator[Difference]:
    for name in sorted(pre.databases):
        before = pre.databases[name].size_bytes
        db_b = post.databases.get(name)
        after = db_b.size_bytes if db_b is not None else None
        if after is None:
            msg = f"{name}: no size measured after the window"
            yield _diff("DatabaseMissing", name, before, None, msg)
            continue
        if before is None or before == after:
            continue
        delta = after - before
        pct = 100.0 * delta / before if before else 100.0
        if abs(pct) > tolerance:
            sign = "+" if delta >= 0 else "-"
            msg = (
                f"{name}: size {sign}{_human_bytes(abs(delta))} ({pct:+.1f}%, tolerance "
                f"{tolerance:g}%)"
            )
            yield _diff("DatabaseSizeChanged", name, before, after, msg)


def _queue_changes(pre: Snapshot, post: Snapshot) -> Iterator[Difference]:
    for name in sorted(post.queues):
        q_b = post.queues[name]
        if q_b.messages:
            q_a = pre.queues.get(name)
            before = q_a.messages if q_a else None
            msg = f"{name}: {q_b.messages} message(s) left in the queue"
            yield _diff("QueueNotEmpty", name, before, q_b.messages, msg)


def _health_changes(pre: Snapshot, post: Snapshot) -> Iterator[Difference]:
    for name in sorted(post.health):
        before_sev = pre.health.get(name, "None")
        after_sev = post.health[name]
        if severity_rank(after_sev) > severity_rank(before_sev):
            msg = f"{name}: incident severity {before_sev} -> {after_sev}"
            yield _diff("HealthWorse", name, before_sev, after_sev, msg)


# -- extraction from API objects (plain dicts; the handler fetches them) ----------------------


def template_hash(template: Mapping[str, Any]) -> str:
    """A stable hash of a pod template: any config change (env, volumes, image) changes it."""
    text = json.dumps(template, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def workload_state(obj: Mapping[str, Any], pods: Sequence[Mapping[str, Any]] = ()) -> WorkloadState:
    """A Deployment/StatefulSet (as JSON) and its pods -> what the snapshot keeps."""
    spec = obj.get("spec") or {}
    template = spec.get("template") or {}
    containers = (template.get("spec") or {}).get("containers") or []
    images = {str(c.get("name")): str(c.get("image")) for c in containers}
    digests: dict[str, str] = {}
    for pod in pods:
        for st in (pod.get("status") or {}).get("containerStatuses") or []:
            image_id = st.get("imageID")
            if image_id and st.get("name") not in digests:
                digests[str(st.get("name"))] = str(image_id)
    replicas = spec.get("replicas")
    return WorkloadState(
        replicas=int(replicas) if isinstance(replicas, int) else None,
        images=images,
        digests=digests,
        config_hash=template_hash(template) if template else None,
    )


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value)
    return None


def from_health_status(name: str, status: Mapping[str, Any], now: datetime) -> Snapshot:
    """What a HealthPolicy's status knows: database sizes, queue depths, the severity."""
    databases: dict[str, DatabaseState] = {}
    queues: dict[str, QueueState] = {}
    for check in status.get("checks") or ():
        if not isinstance(check, Mapping):
            continue
        cname = f"{name}/{check.get('name', '')}"
        m = check.get("measurements") or {}
        if not isinstance(m, Mapping):
            continue
        if check.get("type") == "postgres":
            databases[cname] = DatabaseState(
                size_bytes=_int(m.get("dbSizeBytes")),
                connections=_int(m.get("connectionsUsed")),
                max_connections=_int(m.get("maxConnections")),
            )
        elif check.get("type") == "rabbitmq":
            for q in m.get("queues") or ():
                if isinstance(q, Mapping) and q.get("name") and not q.get("missing"):
                    queues[f"{cname}/{q['name']}"] = QueueState(
                        messages=_int(q.get("messages")), consumers=_int(q.get("consumers"))
                    )
    severity = status.get("severity")
    health = {name: str(severity) if severity else "None"}
    return Snapshot(taken_at=now.astimezone(UTC), databases=databases, queues=queues, health=health)


def combine(parts: Iterable[Snapshot], now: datetime) -> Snapshot:
    """One snapshot from parts taken during the same step, stamped ``now``."""
    out = Snapshot(taken_at=now.astimezone(UTC))
    for part in parts:
        out = out.merged(part)
    return Snapshot(now.astimezone(UTC), out.workloads, out.databases, out.queues, out.health)
