"""Incident objects: their status from a policy's incident news, hand acknowledgement and
resolution, retention, and the evidence gathered at open time shaped and bounded. Pure.

Statuses are plain dicts in the CRD's form (``models/incident.IncidentStatus`` is held to
them in tests); ``now`` is always an argument.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from stronghold_operator import conditions as cond
from stronghold_operator.logic.health.redaction import redact, redactable, scrubbed
from stronghold_operator.models.health import SEVERITIES
from stronghold_operator.models.incident import (
    BY_OPERATOR,
    MAX_EVIDENCE_CHECKS,
    MAX_EVIDENCE_ITEMS,
    MAX_EVIDENCE_USAGE,
    MAX_TIMELINE,
    PodResources,
)

# Evidence: rollouts this recent (the guide's "recent deployments in the last 24 h"),
# Warning Events this recent, and at most this much JSON of one check's measurements.
ROLLOUT_WINDOW = timedelta(hours=24)
EVENT_WINDOW = timedelta(hours=1)
MAX_MEASUREMENTS_JSON = 2000
MAX_TEXT = 300
MAX_NAME = 253
MAX_GROUPED_NAMES = 20  # a group's first members by name; its count says how many

Workload = tuple[str, str]  # (kind, name)


def object_name(incident_id: str) -> str:
    """The Incident object's name: the incident id (``<policy>-<YYYYMMDD-HHMMSS>``), or a
    shortened, still unique form when that would be longer than a name may be."""
    if len(incident_id) <= MAX_NAME:
        return incident_id
    digest = hashlib.sha256(incident_id.encode()).hexdigest()[:10]
    return f"{incident_id[: MAX_NAME - 27].rstrip('.-')}-{digest}{incident_id[-16:]}"


def short_duration(seconds: float) -> str:
    """``45s``, ``12m``, ``1h5m``, ``2d3h``: the DURATION column."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    m = s // 60
    if m < 60:
        return f"{m}m"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h}h{m}m" if m else f"{h}h"
    d, h = divmod(h, 24)
    return f"{d}d{h}h" if h else f"{d}d"


# --- timeline ------------------------------------------------------------------------------


def add(
    timeline: Sequence[Mapping[str, Any]],
    type_: str,
    message: str,
    now: datetime,
    limit: int = MAX_TIMELINE,
) -> list[dict[str, Any]]:
    """``timeline`` with one entry more, bounded: the first entry (Detected) always stays,
    then the newest ones."""
    entry = {"time": cond.rfc3339(now), "type": type_, "message": message[:1000]}
    out = [dict(e) for e in timeline] + [entry]
    if len(out) > limit:
        out = [out[0], *out[len(out) - limit + 1 :]]
    return out


# --- news from the policy's round ------------------------------------------------------------


@dataclass(frozen=True)
class News:
    """What a policy's round said about its incident (a logic.health Notification, flat)."""

    kind: str  # Opened, SeverityChanged, Escalated, Resolved
    incident: Mapping[str, Any]  # the policy's incident entry (or the closed one)
    message: str
    level: int = 1
    # Set: the Incident's Event about this news is not posted but counted by this (a shared
    # target's storm tells it: logic/health/storm.py); the Incident's status still moves.
    folded: Callable[[], None] | None = None
    # What the root cause check probes, as logic/health/storm.target_of names it: an
    # Incident opened on it leads the storm's group (see :func:`grouped`).
    target: str | None = None


def grouped(target: str, count: int, first: Iterable[str]) -> dict[str, Any]:
    """The ``grouped`` status of the Incident that leads a shared target's storm: how many
    policies' incidents on ``target`` opened while it was open and are recorded here
    instead of in Incidents of their own, and the first of them (``namespace/name``)."""
    return {
        "target": target[:MAX_TEXT],
        "count": count,
        "policies": list(itertools.islice(first, MAX_GROUPED_NAMES)),
    }


def opened(
    news: News, affected: Sequence[str], now: datetime, evidence: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A new Incident's status."""
    inc = news.incident
    status: dict[str, Any] = {
        "state": "Open",
        "severity": inc.get("severity"),
        "maxSeverity": inc.get("maxSeverity", inc.get("severity")),
        "rootCause": inc.get("rootCause", ""),
        "summary": str(inc.get("summary", ""))[:1000],
        "affectedChecks": list(dict.fromkeys(affected))[:50],
        "expected": bool(inc.get("expected", False)),
        "startedAt": inc.get("startedAt") or cond.rfc3339(now),
        "escalationLevel": int(inc.get("escalationLevel", 1)),
        "timeline": add([], "Detected", news.message, now),
    }
    if evidence is not None:
        status["evidence"] = dict(evidence)
    return status


def _started(status: Mapping[str, Any], now: datetime) -> datetime:
    return cond.parse_rfc3339(status.get("startedAt")) or now


def _closed(status: Mapping[str, Any], who: str, now: datetime) -> dict[str, Any]:
    seconds = max(0.0, (now - _started(status, now)).total_seconds())
    return {
        "state": "Resolved",
        "resolvedAt": cond.rfc3339(now),
        "resolvedBy": who,
        "durationSeconds": int(seconds),
        "duration": short_duration(seconds),
    }


def updated(
    status: Mapping[str, Any], news: News, affected: Sequence[str], now: datetime
) -> dict[str, Any]:
    """The fields of an existing Incident's status that ``news`` changes ({} for none).

    A resolved Incident takes no more news (one resolved by hand stays resolved; the policy
    opens a new one if its checks still fail)."""
    if status.get("state") == "Resolved":
        return {}
    inc = news.incident
    timeline = status.get("timeline") or []
    out: dict[str, Any] = {}
    if news.kind == "Resolved":
        out = _closed(status, BY_OPERATOR, now)
        out["timeline"] = add(timeline, "Resolved", news.message, now)
        return out
    seen = list(status.get("affectedChecks") or [])
    more = [a for a in affected if a not in seen]
    if more:
        out["affectedChecks"] = (seen + more)[:50]
    for key in ("severity", "rootCause"):
        if inc.get(key) and inc.get(key) != status.get(key):
            out[key] = inc[key]
    seen_worst = [status.get("maxSeverity"), inc.get("maxSeverity"), inc.get("severity")]
    worst = min((str(s) for s in seen_worst if s in SEVERITIES), default=None)  # P1 < P4
    if worst is not None and worst != status.get("maxSeverity"):
        out["maxSeverity"] = worst
    if news.kind == "Escalated":
        out["escalationLevel"] = news.level
    type_ = {"SeverityChanged": "SeverityChanged", "Escalated": "Escalated"}.get(
        news.kind, "Announced"
    )
    out["summary"] = str(inc.get("summary", status.get("summary", "")))[:1000]
    out["timeline"] = add(timeline, type_, news.message, now)
    return out


def reopened(
    status: Mapping[str, Any], news: News, affected: Sequence[str], now: datetime
) -> dict[str, Any]:
    """A resolved Incident whose incident came back (the policy's flap damping re-opened
    it): open again (acknowledged, if it was), its resolution cleared, a Reopened entry."""
    inc = news.incident
    seen_worst = [status.get("maxSeverity"), inc.get("maxSeverity"), inc.get("severity")]
    seen = list(status.get("affectedChecks") or [])
    return {
        "state": "Acknowledged" if status.get("acknowledgedBy") else "Open",
        "resolvedAt": None,
        "resolvedBy": None,
        "durationSeconds": None,
        "duration": None,
        "severity": inc.get("severity", status.get("severity")),
        "maxSeverity": min((str(s) for s in seen_worst if s in SEVERITIES), default=None),
        "rootCause": inc.get("rootCause", status.get("rootCause")),
        "summary": str(inc.get("summary", status.get("summary", "")))[:1000],
        "affectedChecks": (seen + [a for a in affected if a not in seen])[:50],
        "timeline": add(status.get("timeline") or [], "Reopened", news.message, now),
    }


# --- by hand ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hand:
    """What people asked of an Incident with its annotations."""

    acknowledged_by: str | None = None
    resolved_by: str | None = None


def hand_of(annotations: Mapping[str, str] | None, ack: str, resolve: str) -> Hand:
    notes = annotations or {}

    def who(key: str) -> str | None:
        value = notes.get(key)
        if value is None:
            return None
        return str(value).strip()[:MAX_NAME] or "someone"

    return Hand(who(ack), who(resolve))


def by_hand(status: Mapping[str, Any], hand: Hand, now: datetime) -> dict[str, Any]:
    """The fields an acknowledgement or a resolution by hand changes ({} when none applies:
    already acknowledged or resolved, or nothing asked)."""
    state = status.get("state")
    if state == "Resolved" or state is None:
        return {}
    timeline = status.get("timeline") or []
    out: dict[str, Any] = {}
    if hand.acknowledged_by and state == "Open":
        out = {
            "state": "Acknowledged",
            "acknowledgedAt": cond.rfc3339(now),
            "acknowledgedBy": hand.acknowledged_by,
        }
        timeline = add(timeline, "Acknowledged", f"acknowledged by {hand.acknowledged_by}", now)
        out["timeline"] = timeline
    if hand.resolved_by:
        out.update(_closed(status, hand.resolved_by, now))
        out["timeline"] = add(timeline, "Resolved", f"resolved by hand by {hand.resolved_by}", now)
    return out


def seconds_between(status: Mapping[str, Any], key: str) -> float | None:
    """Seconds from ``startedAt`` to ``key`` (time to acknowledge, to resolve)."""
    start = cond.parse_rfc3339(status.get("startedAt"))
    end = cond.parse_rfc3339(status.get(key))
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


# --- retention -------------------------------------------------------------------------------


def to_prune(
    incidents: Iterable[Mapping[str, Any]], count: int, max_age: timedelta, now: datetime
) -> list[str]:
    """Names of the resolved Incidents to delete: beyond the newest ``count`` resolved, or
    resolved longer ago than ``max_age``. Open and acknowledged ones are never pruned."""
    resolved: list[tuple[datetime, str]] = []
    for obj in incidents:
        status = obj.get("status") or {}
        if status.get("state") != "Resolved":
            continue
        meta = obj.get("metadata") or {}
        when = (
            cond.parse_rfc3339(status.get("resolvedAt"))
            or cond.parse_rfc3339(meta.get("creationTimestamp"))
            or now
        )
        resolved.append((when, str(meta.get("name"))))
    resolved.sort(reverse=True)
    return [name for i, (when, name) in enumerate(resolved) if i >= count or now - when > max_age]


# --- evidence --------------------------------------------------------------------------------


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _owner(obj: Mapping[str, Any], kind: str) -> str | None:
    for ref in _meta(obj).get("ownerReferences") or ():
        if isinstance(ref, Mapping) and ref.get("kind") == kind:
            return str(ref.get("name"))
    return None


def rollouts(
    replicasets: Iterable[Mapping[str, Any]],
    revisions: Iterable[Mapping[str, Any]],
    now: datetime,
    limit: int = MAX_EVIDENCE_ITEMS,
) -> list[dict[str, Any]]:
    """Deployments (their ReplicaSets) and StatefulSets (their ControllerRevisions) rolled
    out in the last 24 h, newest first."""
    found: list[tuple[datetime, dict[str, Any]]] = []
    sources = ((replicasets, "Deployment", "ReplicaSet"), (revisions, "StatefulSet", None))
    for objects, kind, own in sources:
        for obj in objects:
            owner = _owner(obj, kind)
            created = cond.parse_rfc3339(_meta(obj).get("creationTimestamp"))
            if owner is None or created is None or now - created > ROLLOUT_WINDOW:
                continue
            annotations = _meta(obj).get("annotations") or {}
            revision = annotations.get("deployment.kubernetes.io/revision") if own else None
            if revision is None and not own:
                revision = obj.get("revision")
            entry = {
                "kind": kind,
                "name": owner,
                "revision": "" if revision is None else str(revision),
                "object": f"{own or 'ControllerRevision'}/{_meta(obj).get('name')}",
                "at": cond.rfc3339(created),
            }
            found.append((created, entry))
    found.sort(key=lambda pair: pair[0], reverse=True)
    return [e for _, e in found[:limit]]


def restarts(
    pods: Iterable[Mapping[str, Any]], limit: int = MAX_EVIDENCE_ITEMS
) -> list[dict[str, Any]]:
    """Containers that restarted or were OOMKilled, with their last termination; most
    restarts first."""
    found: list[dict[str, Any]] = []
    for pod in pods:
        status = pod.get("status") or {}
        containers = [
            *(status.get("initContainerStatuses") or ()),
            *(status.get("containerStatuses") or ()),
        ]
        for cs in containers:
            last = ((cs.get("lastState") or {}).get("terminated")) or {}
            now_term = ((cs.get("state") or {}).get("terminated")) or {}
            term = last or now_term
            count = int(cs.get("restartCount") or 0)
            if count == 0 and term.get("reason") != "OOMKilled":
                continue
            entry: dict[str, Any] = {
                "pod": str(_meta(pod).get("name")),
                "container": str(cs.get("name")),
                "restarts": count,
                "lastReason": str(term.get("reason") or ""),
            }
            if isinstance(term.get("exitCode"), int):
                entry["exitCode"] = term["exitCode"]
            if term.get("finishedAt"):
                entry["finishedAt"] = term["finishedAt"]
            found.append(entry)
    found.sort(key=lambda e: (e["lastReason"] != "OOMKilled", -e["restarts"]))
    return found[:limit]


def _event_time(ev: Mapping[str, Any]) -> datetime | None:
    for key in ("lastTimestamp", "eventTime", "firstTimestamp"):
        when = cond.parse_rfc3339(ev.get(key))
        if when is not None:
            return when
    series = ev.get("series") or {}
    return cond.parse_rfc3339(series.get("lastObservedTime")) or cond.parse_rfc3339(
        _meta(ev).get("creationTimestamp")
    )


def warning_events(
    events: Iterable[Mapping[str, Any]],
    now: datetime,
    secrets: Sequence[str] = (),
    limit: int = MAX_EVIDENCE_ITEMS,
) -> list[dict[str, Any]]:
    """The namespace's Warning Events of the last hour, newest first (messages truncated
    and redacted against the policy's Secret values)."""
    found: list[tuple[datetime, dict[str, Any]]] = []
    for ev in events:
        if ev.get("type") != "Warning":
            continue
        when = _event_time(ev)
        if when is None or now - when > EVENT_WINDOW:
            continue
        involved = ev.get("involvedObject") or ev.get("regarding") or {}
        found.append(
            (
                when,
                {
                    "object": f"{involved.get('kind', '')}/{involved.get('name', '')}",
                    "reason": str(ev.get("reason") or ""),
                    "message": redact(str(ev.get("message") or ev.get("note") or ""), secrets)[
                        :MAX_TEXT
                    ],
                    "count": int(ev.get("count") or 1),
                    "lastSeen": cond.rfc3339(when),
                },
            )
        )
    found.sort(key=lambda pair: pair[0], reverse=True)
    return [e for _, e in found[:limit]]


def _bounded(measurements: Mapping[str, Any]) -> dict[str, Any]:
    """Measurements whose JSON fits the bound: whole keys in order until it is reached."""
    out: dict[str, Any] = {}
    size = 2
    for key, value in measurements.items():
        piece = len(json.dumps({key: value}, default=str))
        if size + piece > MAX_MEASUREMENTS_JSON:
            out["truncated"] = True
            break
        out[key] = value
        size += piece
    return out


def failing_checks(
    checks: Iterable[Mapping[str, Any]], secrets: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """The policy's bad checks (Warning or Critical) with their measurements, bounded."""
    out: list[dict[str, Any]] = []
    for c in checks:
        if c.get("state") not in ("Warning", "Critical"):
            continue
        out.append(
            {
                "name": str(c.get("name")),
                "type": str(c.get("type", "")),
                "state": str(c.get("state")),
                "reason": str(c.get("reason", "")),
                "message": redact(str(c.get("message", "")), secrets)[:MAX_TEXT],
                "measurements": scrubbed(
                    _bounded(c.get("measurements") or {}), redactable(secrets)
                ),
            }
        )
    return out[:MAX_EVIDENCE_CHECKS]


def evidence(
    *,
    replicasets: Iterable[Mapping[str, Any]],
    revisions: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    events: Iterable[Mapping[str, Any]],
    checks: Iterable[Mapping[str, Any]],
    errors: Sequence[str],
    now: datetime,
    secrets: Sequence[str] = (),
    metrics: Mapping[str, tuple[float, float]] | None = None,
    resources: Mapping[str, PodResources] | None = None,
    named: Sequence[Workload] = (),
) -> dict[str, Any]:
    """The evidence of an Incident, in its status form (``metrics`` None: not read, no
    usage; its error is in ``errors``)."""
    pods = list(pods)
    replicasets = list(replicasets)
    out: dict[str, Any] = {
        "gatheredAt": cond.rfc3339(now),
        "errors": [redact(e, secrets)[:MAX_TEXT] for e in errors][:10],
        "rollouts": rollouts(replicasets, revisions, now),
        "restarts": restarts(pods),
        "warningEvents": warning_events(events, now, secrets),
        "checks": failing_checks(checks, secrets),
    }
    if metrics is not None:
        out["usage"] = usage(pods, replicasets, metrics, resources or {}, named)
    return out


# --- resource usage of the workloads ---------------------------------------------------------

_POD_OWNERS = ("StatefulSet", "DaemonSet")


def workload_of(pod: Mapping[str, Any], deployments: Mapping[str, str]) -> Workload | None:
    """The Deployment, StatefulSet or DaemonSet a pod belongs to (``deployments``: the
    namespace's ReplicaSet name -> its Deployment), or None (a bare pod, a Job's)."""
    rs = _owner(pod, "ReplicaSet")
    if rs is not None:
        deployment = deployments.get(rs)
        return None if deployment is None else ("Deployment", deployment)
    for kind in _POD_OWNERS:
        name = _owner(pod, kind)
        if name is not None:
            return (kind, name)
    return None


def _percent(used: float, basis: float | None) -> int | None:
    return None if not basis else round(100.0 * used / basis)


@dataclass
class _Tally:
    """One workload's pods so far: how many, those measured, their usage and bases."""

    pods: int = 0
    cpu: float = 0.0
    memory: float = 0.0
    bases: list[PodResources] = field(default_factory=list)  # one per measured pod


_PERCENTS = (
    ("cpuPercentOfRequests", "cpu", "cpu_request"),
    ("memoryPercentOfRequests", "memory", "memory_request"),
    ("cpuPercentOfLimits", "cpu", "cpu_limit"),
    ("memoryPercentOfLimits", "memory", "memory_limit"),
)


def _usage_entry(kind: str, name: str, t: _Tally, mine: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "kind": kind,
        "name": name,
        "pods": t.pods,
        "measuredPods": len(t.bases),
        "policyTarget": mine,
    }
    if not t.bases:
        return entry
    entry["cpuMillicores"] = round(t.cpu * 1000)
    entry["memoryBytes"] = round(t.memory)
    for key, used, basis in _PERCENTS:
        values = [getattr(b, basis) for b in t.bases]
        if all(v is not None for v in values):
            percent = _percent(getattr(t, used), sum(v for v in values if v is not None))
            if percent is not None:
                entry[key] = percent
    return entry


def usage(
    pods: Iterable[Mapping[str, Any]],
    replicasets: Iterable[Mapping[str, Any]],
    metrics: Mapping[str, tuple[float, float]],
    resources: Mapping[str, PodResources],
    named: Sequence[Workload] = (),
    limit: int = MAX_EVIDENCE_USAGE,
) -> list[dict[str, Any]]:
    """Per workload: its live pods, the CPU (millicores) and memory (bytes) the measured
    ones use (``metrics``: pod -> (cores, bytes) from metrics.k8s.io) and that as a
    percentage of their requests and limits (when every measured pod sets them: a sum
    over some pods against a basis of others would mislead). The policy's own workloads
    (``named``) first, then the others by CPU; only measured workloads and named ones."""
    deployments = {
        str(_meta(rs).get("name")): d
        for rs in replicasets
        if (d := _owner(rs, "Deployment")) is not None
    }
    found: dict[Workload, _Tally] = {w: _Tally() for w in named}
    for pod in pods:
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        owner = workload_of(pod, deployments)
        if owner is None:
            continue
        t = found.setdefault(owner, _Tally())
        t.pods += 1
        name = str(_meta(pod).get("name"))
        if name in metrics:
            cpu, memory = metrics[name]
            t.cpu += cpu
            t.memory += memory
            t.bases.append(resources.get(name, PodResources()))
    order = {w: i for i, w in enumerate(named)}
    ranked = sorted(
        ((order.get(w, len(order)), -t.cpu, w), t)
        for w, t in found.items()
        if w in order or t.bases
    )
    return [_usage_entry(*w, t, w in order) for (_, _, w), t in ranked[:limit]]
