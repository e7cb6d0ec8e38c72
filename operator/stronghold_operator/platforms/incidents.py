"""Incident objects in the API: create one owned by its HealthPolicy, read what the
evidence is made of (once, at open time), delete (retention)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stronghold_operator.models.incident import KIND, PLURAL, POLICY_LABEL, PodResources
from stronghold_operator.models.scaling import MetricsUnavailableError
from stronghold_operator.platforms.kube import (
    CONTROLLERREVISIONS,
    EVENTS,
    GROUP,
    PODS,
    REPLICASETS,
    VERSION,
    ApiError,
    Kind,
    Kube,
    ours,
)
from stronghold_operator.platforms.metrics_api import pod_metrics
from stronghold_operator.platforms.quantity import parse_quantity

# A listing that takes longer than this is left out of the evidence (and said so).
EVIDENCE_TIMEOUT_S = 10.0


def incident_body(
    namespace: str, name: str, policy: str, policy_uid: str, incident_id: str
) -> dict[str, Any]:
    """A new Incident: owned by its HealthPolicy (garbage-collected with it), labelled with
    the policy's name when it fits a label value (``kubectl get inc -l ...``)."""
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "ownerReferences": [
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "HealthPolicy",
                "name": policy,
                "uid": policy_uid,
                "controller": True,
            }
        ],
    }
    if len(policy) <= 63:
        meta["labels"] = {POLICY_LABEL: policy}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": meta,
        "spec": {"healthPolicy": policy, "id": incident_id},
    }


@dataclass
class Raw:
    """What the evidence is made of, as the API returned it; ``errors`` what failed."""

    replicasets: list[dict[str, Any]] = field(default_factory=list)
    revisions: list[dict[str, Any]] = field(default_factory=list)
    pods: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    # pod -> (CPU cores, memory bytes) from metrics.k8s.io; None: not read (see errors).
    metrics: dict[str, tuple[float, float]] | None = None
    errors: list[str] = field(default_factory=list)


async def _listed(
    kube: Kube, kind: Kind, namespace: str, errors: list[str]
) -> list[dict[str, Any]]:
    try:
        return await asyncio.wait_for(kube.list(kind, namespace), EVIDENCE_TIMEOUT_S)
    except ApiError as exc:
        errors.append(f"{kind.plural}: {exc.status} {exc.reason}")
    except (TimeoutError, ConnectionError) as exc:
        errors.append(f"{kind.plural}: {type(exc).__name__}")
    return []


async def _usage(
    kube: Kube, namespace: str, errors: list[str]
) -> dict[str, tuple[float, float]] | None:
    """The namespace's PodMetrics (metrics.k8s.io's reader, platforms/metrics_api.py)."""
    try:
        read = await asyncio.wait_for(pod_metrics(kube, namespace, {}), EVIDENCE_TIMEOUT_S)
    except MetricsUnavailableError as exc:  # no metrics API, or its server is down
        errors.append(f"podmetrics: {exc}")
    except (ApiError, TimeoutError, ConnectionError) as exc:
        errors.append(f"podmetrics: {type(exc).__name__}")
    else:
        return {pod: (cpu, memory) for pod, (cpu, memory, _) in read.items()}
    return None


async def gather(kube: Kube, namespace: str) -> Raw:
    """The namespace's ReplicaSets, ControllerRevisions, pods, Events and PodMetrics (five
    LISTs, in parallel; a failed one is an error line, never an exception)."""
    raw = Raw()
    raw.replicasets, raw.revisions, raw.pods, raw.events, raw.metrics = await asyncio.gather(
        _listed(kube, REPLICASETS, namespace, raw.errors),
        _listed(kube, CONTROLLERREVISIONS, namespace, raw.errors),
        _listed(kube, PODS, namespace, raw.errors),
        _listed(kube, EVENTS, namespace, raw.errors),
        _usage(kube, namespace, raw.errors),
    )
    return raw


def _summed(containers: list[dict[str, Any]], kind: str, resource: str) -> float | None:
    total = 0.0
    for c in containers:
        value = ((c.get("resources") or {}).get(kind) or {}).get(resource)
        if value is None:
            return None
        try:
            total += parse_quantity(value)
        except ValueError:
            return None
    return total


def resources(pods: list[dict[str, Any]]) -> dict[str, PodResources]:
    """Each pod's containers' requests and limits summed (None where one sets none)."""
    out: dict[str, PodResources] = {}
    for pod in pods:
        containers = list((pod.get("spec") or {}).get("containers") or [])
        name = str((pod.get("metadata") or {}).get("name"))
        out[name] = PodResources(
            _summed(containers, "requests", "cpu"),
            _summed(containers, "requests", "memory"),
            _summed(containers, "limits", "cpu"),
            _summed(containers, "limits", "memory"),
        )
    return out


async def create(kube: Kube, body: Mapping[str, Any]) -> dict[str, Any]:
    return await kube.create(ours(PLURAL), str(body["metadata"]["namespace"]), body)


async def get(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    return await kube.get(ours(PLURAL), name, namespace)


async def delete(kube: Kube, namespace: str, name: str) -> None:
    await kube.delete(ours(PLURAL), name, namespace)
