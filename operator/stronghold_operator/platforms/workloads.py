"""Kubernetes workloads for ScalingPolicy: the scale subresource, pods and their requests.

Other autoscalers of a workload (HPAs, ScalingPolicies) come from kopf's indexes
(platforms/indexes.py), not from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity

from stronghold_operator.models.scaling import MissingBasis, ReplicaUsage, TargetNotFound
from stronghold_operator.platforms.kube import Kube, call
from stronghold_operator.platforms.metrics_api import pod_metrics


@dataclass(frozen=True)
class Scale:
    """The scale subresource: what the workload wants and what it has."""

    replicas: int
    status_replicas: int
    selector: str


@dataclass(frozen=True)
class PodBasis:
    """A running pod and the sum of its containers' requests (the utilisation basis)."""

    name: str
    cpu_request_cores: float
    memory_request_bytes: float


async def read_scale(kube: Kube, namespace: str, kind: str, name: str) -> Scale:
    reader = {
        "Deployment": kube.apps.read_namespaced_deployment_scale,
        "StatefulSet": kube.apps.read_namespaced_stateful_set_scale,
    }[kind]
    try:
        scale = await call(reader, name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            raise TargetNotFound(f"{kind} {namespace}/{name} not found") from None
        raise
    got: Any = scale  # the client's models type every field as optional
    return Scale(
        replicas=int(got.spec.replicas or 0),
        status_replicas=int(got.status.replicas or 0),
        selector=str(got.status.selector or ""),
    )


async def patch_scale(kube: Kube, namespace: str, kind: str, name: str, replicas: int) -> None:
    """Set ``spec.replicas`` through the scale subresource (what kubectl scale does)."""
    patcher = {
        "Deployment": kube.apps.patch_namespaced_deployment_scale,
        "StatefulSet": kube.apps.patch_namespaced_stateful_set_scale,
    }[kind]
    await call(
        patcher,
        name,
        namespace,
        {"spec": {"replicas": replicas}},
        _content_type="application/merge-patch+json",
    )


def quantity(value: Any) -> float:
    """A Kubernetes quantity ("250m", "64Mi", "1.5") as a float (cores or bytes)."""
    return float(parse_quantity(value))  # type: ignore[no-untyped-call]


def _requests(container: Any) -> Mapping[str, Any]:
    resources = container.resources
    return (resources.requests if resources is not None else None) or {}


async def running_pods(kube: Kube, namespace: str, selector: str) -> list[PodBasis]:
    """Running, not terminating pods matching ``selector`` with their summed requests.

    Raises :class:`MissingBasis` naming the first container without a CPU or memory
    request: utilisation "of requests" means nothing without them.
    """
    listed = await call(kube.core.list_namespaced_pod, namespace, label_selector=selector)
    out: list[PodBasis] = []
    items: list[Any] = list(listed.items)
    for pod in items:
        if pod.status is None or pod.status.phase != "Running" or pod.metadata.deletion_timestamp:
            continue
        cpu = 0.0
        mem = 0.0
        for c in pod.spec.containers:
            req = _requests(c)
            if "cpu" not in req or "memory" not in req:
                missing = "cpu" if "cpu" not in req else "memory"
                raise MissingBasis(
                    f"container {c.name!r} of pod {pod.metadata.name} has no {missing} request; "
                    "utilisation is measured against requests"
                )
            cpu += quantity(req["cpu"])
            mem += quantity(req["memory"])
        out.append(PodBasis(pod.metadata.name, cpu, mem))
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
