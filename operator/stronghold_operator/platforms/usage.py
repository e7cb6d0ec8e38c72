"""Usage of a workload's replicas, whichever platform runs it: one entry point for readers.

It only picks ScalingPolicy's readers by the target's kind: :class:`KubeWorkload`
(metrics.k8s.io, relative to requests) or :class:`ComposeService` (Docker stats, relative
to limits). HealthPolicy's resources checks use it, so both kinds measure the same way.
"""

from __future__ import annotations

from stronghold_operator.models.scaling import MetricsUnavailableError, ReplicaUsage, TargetRef
from stronghold_operator.platforms.compose import ComposeService, ComposeTarget
from stronghold_operator.platforms.kube import Kube
from stronghold_operator.platforms.workloads import KubeWorkload


async def read_usage(kube: Kube | None, namespace: str, ref: TargetRef) -> list[ReplicaUsage]:
    """Usage and basis of every running replica of ``ref`` (``namespace`` for Kubernetes).

    Raises TargetNotFound, MissingBasis, MetricsUnavailableError (also when ``kube`` is None
    for a Kubernetes target), ConnectionError (Docker Engine unreachable), or the client's
    own errors.
    """
    if ref.is_compose:
        target = ComposeTarget(ref.project or "", ref.service or "", ref.docker_host)
        return await ComposeService(target).read_usage()
    if kube is None:
        raise MetricsUnavailableError("no Kubernetes API access (in-cluster config or kubeconfig)")
    return await KubeWorkload(kube, namespace, ref.kind, ref.name or "").read_usage()
