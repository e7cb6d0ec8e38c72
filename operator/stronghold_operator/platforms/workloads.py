"""Kubernetes workloads for ScalingPolicy: the scale subresource, pods and their requests.

Other autoscalers of a workload (HPAs, ScalingPolicies) come from kopf's indexes
(platforms/indexes.py), not from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from stronghold_operator.models.scaling import MissingBasis, ReplicaUsage, TargetNotFound
from stronghold_operator.platforms.kube import (
    PODS,
    ApiError,
    Kube,
    is_not_found,
    label_selector,
    workload,
)
from stronghold_operator.platforms.metrics_api import pod_metrics
from stronghold_operator.platforms.quantity import parse_quantity


@dataclass(frozen=True)
class Scale:
    """What the workload wants and what it has, and its pods' selector (a LabelSelector)."""

    replicas: int
    status_replicas: int
    selector: Mapping[str, Any]


@dataclass(frozen=True)
class PodBasis:
    """A running pod and the sum of its containers' requests (the utilisation basis)."""

    name: str
    cpu_request_cores: float
    memory_request_bytes: float


async def read_scale(kube: Kube, namespace: str, kind: str, name: str) -> Scale:
    """The workload's replicas and selector, from the object (one GET, like its scale
    subresource, but with the selector structured as lightkube's selectors take it)."""
    try:
        obj = await kube.get(workload(kind), name, namespace)
    except ApiError as exc:
        if is_not_found(exc):
            raise TargetNotFound(f"{kind} {namespace}/{name} not found") from None
        raise
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return Scale(
        replicas=int(spec.get("replicas") or 0),
        status_replicas=int(status.get("replicas") or 0),
        selector=spec.get("selector") or {},
    )


async def patch_scale(kube: Kube, namespace: str, kind: str, name: str, replicas: int) -> None:
    """Set ``spec.replicas`` through the scale subresource (what kubectl scale does)."""
    await kube.patch(
        workload(kind), name, namespace, {"spec": {"replicas": replicas}}, subresource="scale"
    )


def quantity(value: Any) -> float:
    """A Kubernetes quantity ("250m", "64Mi", "1.5") as a float (cores or bytes)."""
    return parse_quantity(value)


def _requests(container: Mapping[str, Any]) -> Mapping[str, Any]:
    return (container.get("resources") or {}).get("requests") or {}


async def running_pods(kube: Kube, namespace: str, selector: Mapping[str, Any]) -> list[PodBasis]:
    """Running, not terminating pods matching ``selector`` with their summed requests.

    Raises :class:`MissingBasis` naming the first container without a CPU or memory
    request: utilisation "of requests" means nothing without them.
    """
    pods = await kube.list(PODS, namespace, labels=label_selector(selector))
    out: list[PodBasis] = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        if (pod.get("status") or {}).get("phase") != "Running" or meta.get("deletionTimestamp"):
            continue
        cpu = 0.0
        mem = 0.0
        for c in (pod.get("spec") or {}).get("containers") or []:
            req = _requests(c)
            if "cpu" not in req or "memory" not in req:
                missing = "cpu" if "cpu" not in req else "memory"
                raise MissingBasis(
                    f"container {c.get('name')!r} of pod {meta.get('name')} has no {missing} "
                    "request; utilisation is measured against requests"
                )
            cpu += quantity(req["cpu"])
            mem += quantity(req["memory"])
        out.append(PodBasis(str(meta.get("name")), cpu, mem))
    return out


def combine(
    pods: list[PodBasis], usage: Mapping[str, tuple[float, float, datetime]]
) -> list[ReplicaUsage]:
    """Pods that have both requests and metrics (new pods without metrics yet are left out)."""
    out: list[ReplicaUsage] = []
    for p in pods:
        if p.name not in usage:
            continue
        cpu, mem, when = usage[p.name]
        out.append(
            ReplicaUsage(p.name, cpu, mem, p.cpu_request_cores, p.memory_request_bytes, when)
        )
    return out


@dataclass(frozen=True)
class KubeWorkload:
    """A Deployment or StatefulSet as a scaling target (the handler's view of it)."""

    kube: Kube
    namespace: str
    kind: str
    name: str

    async def read_replicas(self) -> int:
        return (await read_scale(self.kube, self.namespace, self.kind, self.name)).replicas

    async def read_usage(self) -> list[ReplicaUsage]:
        """Usage of the running pods relative to their requests (metrics.k8s.io)."""
        scale = await read_scale(self.kube, self.namespace, self.kind, self.name)
        pods = await running_pods(self.kube, self.namespace, scale.selector)
        if not pods:
            return []
        return combine(pods, await pod_metrics(self.kube, self.namespace, scale.selector))

    async def scale(self, replicas: int) -> list[str]:
        await patch_scale(self.kube, self.namespace, self.kind, self.name, replicas)
        return [f"{self.kind}/{self.name}"]
