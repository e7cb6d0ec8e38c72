"""Kubernetes workloads for ScalingPolicy: the scale subresource, pods and their requests, HPAs.

HorizontalPodAutoscalers are served as autoscaling/v2beta2 by Kubernetes 1.20-1.25 and as
autoscaling/v2 from 1.23 on, while the Python client only ships classes for the newer API.
So the version is found by API discovery and the objects are read through the generic
(custom-objects) API as plain JSON, which works for every version a cluster serves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity

from stronghold_operator.models.scaling import MissingBasis, ReplicaUsage, TargetNotFound
from stronghold_operator.platforms.kube import GROUP, VERSION, Kube, call, call_json
from stronghold_operator.platforms.metrics_api import pod_metrics

# Newest first: the first one the cluster serves is used.
HPA_VERSIONS = ("v2", "v2beta2", "v2beta1", "v1")
SCALING_POLICIES = "scalingpolicies"


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


@dataclass(frozen=True)
class Autoscaler:
    """Another autoscaler pointing at a workload (found by discovery, read generically)."""

    kind: str
    name: str
    api_version: str
    target_kind: str
    target_name: str


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


async def served_versions(kube: Kube, group: str) -> list[str]:
    """The versions of an API group the cluster serves (API discovery: GET /apis)."""
    groups = await call(kubernetes.client.ApisApi(kube.api).get_api_versions)
    for g in groups.groups or []:
        if g.name == group:
            return [str(v.version) for v in g.versions or []]
    return []


def _hpa_target(item: Mapping[str, Any]) -> tuple[str, str]:
    ref = item.get("spec", {}).get("scaleTargetRef", {})
    return str(ref.get("kind", "")), str(ref.get("name", ""))


async def list_hpas(kube: Kube, namespace: str) -> list[Autoscaler]:
    """Every HorizontalPodAutoscaler in ``namespace``, read with the newest served version."""
    versions = await served_versions(kube, "autoscaling")
    version = next((v for v in HPA_VERSIONS if v in versions), None)
    if version is None:
        return []
    body = await call_json(
        kube.custom.list_namespaced_custom_object,
        "autoscaling",
        version,
        namespace,
        "horizontalpodautoscalers",
    )
    out: list[Autoscaler] = []
    for item in body.get("items", []):
        kind, name = _hpa_target(item)
        out.append(
            Autoscaler(
                kind="HorizontalPodAutoscaler",
                name=item["metadata"]["name"],
                api_version=f"autoscaling/{version}",
                target_kind=kind,
                target_name=name,
            )
        )
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


@dataclass(frozen=True)
class KubeAutoscalers:
    """Who else scales workloads, from the apiserver (the scaling service's Autoscalers port).

    ``namespaces`` is what the operator watches (None: cluster-wide); a Compose target is
    checked against ScalingPolicies in all of them.
    """

    kube: Kube
    namespaces: list[str] | None = None

    async def hpas(self, namespace: str) -> list[Autoscaler]:
        return await list_hpas(self.kube, namespace)

    async def policies(self, namespace: str, *, everywhere: bool) -> list[Mapping[str, Any]]:
        if everywhere and self.namespaces is None:
            listed = await call_json(
                self.kube.custom.list_cluster_custom_object, GROUP, VERSION, SCALING_POLICIES
            )
            return list(listed.get("items", []))
        items: list[Mapping[str, Any]] = []
        for n in (self.namespaces or [namespace]) if everywhere else [namespace]:
            listed = await call_json(
                self.kube.custom.list_namespaced_custom_object, GROUP, VERSION, n, SCALING_POLICIES
            )
            items += listed.get("items", [])
        return items
