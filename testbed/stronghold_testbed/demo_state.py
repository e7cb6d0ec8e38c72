"""The demo's example objects, read from their status: settled or not, and a one-line summary.

Pure functions of the objects ``kubectl get stronghold -o json`` returns, so the settle rule
is unit-tested without a cluster. "Settled" means each object has its first real result:
a HealthPolicy Healthy=True, a BackupSchedule's first backup taken (and verified when the
schedule verifies), a ScalingPolicy decision from real metrics, a MaintenanceWindow's next
window computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# stronghold_operator.logic.scaling.METRICS_UNAVAILABLE (the testbed does not import the
# operator).
METRICS_UNAVAILABLE = "MetricsUnavailable"


@dataclass(frozen=True)
class Row:
    kind: str
    name: str
    state: str
    detail: str
    pending: str | None  # what it still waits for; None when settled


def _status(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("status") or {}


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for c in _status(obj).get("conditions") or []:
        if c.get("type") == kind:
            return dict(c)
    return {}


def _health(obj: dict[str, Any]) -> Row:
    st, healthy = _status(obj), _condition(obj, "Healthy")
    state = {"True": "Healthy", "False": "Unhealthy"}.get(healthy.get("status", ""), "Unknown")
    incident = (st.get("incident") or {}).get("rootCause")
    detail = f"worst latency {st.get('worstLatency', '-')}"
    if incident:
        detail = f"incident: {incident}; {detail}"
    pending = None if healthy.get("status") == "True" else "Healthy=True"
    return Row("HealthPolicy", obj["metadata"]["name"], state, detail, pending)


def _backup(obj: dict[str, Any]) -> Row:
    st = _status(obj)
    verifies = (obj.get("spec") or {}).get("verify") is not None
    last, verified = st.get("lastSuccessfulTime"), st.get("lastVerifiedTime")
    if not last:
        pending: str | None = "the first backup"
    elif verifies and not verified:
        pending = "the first backup's verification"
    else:
        pending = None
    state = "backed up" if last else "no backup yet"
    detail = (
        f"last {last or '-'}, verified {verified or '-'}, next {st.get('nextScheduleTime', '-')}"
    )
    return Row("BackupSchedule", obj["metadata"]["name"], state, detail, pending)


def _scaling(obj: dict[str, Any]) -> Row:
    st = _status(obj)
    decision = st.get("lastDecision") or {}
    reason = decision.get("reason")
    cpu = st.get("currentCpuUtilizationPercent")
    state = f"{st.get('currentReplicas', '?')} -> {st.get('desiredReplicas', '?')} replicas"
    detail = (
        f"{decision.get('action', '-')} {reason or '-'}, cpu {cpu if cpu is not None else '-'}%"
    )
    real = reason is not None and reason != METRICS_UNAVAILABLE and cpu is not None
    pending = None if real else "a decision from real metrics"
    return Row("ScalingPolicy", obj["metadata"]["name"], state, detail, pending)


def _window(obj: dict[str, Any]) -> Row:
    st = _status(obj)
    active = _condition(obj, "Active").get("status") == "True"
    start = (st.get("nextWindow") or {}).get("startLocal")
    state = "active" if active else "scheduled"
    detail = f"next start {start or '-'}, last result {st.get('lastResult') or '-'}"
    pending = None if (active or start) else "the next window"
    return Row("MaintenanceWindow", obj["metadata"]["name"], state, detail, pending)


_BY_KIND = {
    "HealthPolicy": _health,
    "BackupSchedule": _backup,
    "ScalingPolicy": _scaling,
    "MaintenanceWindow": _window,
}
EXPECTED_KINDS = tuple(_BY_KIND)


def rows(items: list[dict[str, Any]]) -> list[Row]:
    """One row per object, in the order of EXPECTED_KINDS."""
    order = {k: i for i, k in enumerate(EXPECTED_KINDS)}
    known = [i for i in items if i.get("kind") in _BY_KIND]
    known.sort(key=lambda i: (order[i["kind"]], i["metadata"]["name"]))
    return [_BY_KIND[i["kind"]](i) for i in known]


def pending(items: list[dict[str, Any]]) -> str | None:
    """What has not settled yet ("HealthPolicy/platform: Healthy=True; ..."), None if all did."""
    present = {i.get("kind") for i in items}
    waits = [f"a {k}" for k in EXPECTED_KINDS if k not in present]
    waits += [f"{r.kind}/{r.name}: {r.pending}" for r in rows(items) if r.pending]
    return "; ".join(waits) or None
