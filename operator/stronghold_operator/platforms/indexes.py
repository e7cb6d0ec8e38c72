"""What the operator keeps in kopf indexes instead of LISTing every pass, and the ports that
answer from them.

kopf fills an index from the watches it runs anyway and keeps it current; it starts no
other handler before every index is complete. The index functions here are pure (a body in,
``{key: value}`` out) so they are unit-tested without kopf. An index function returns ``{}``
(never None) for an object that no longer belongs in the index: kopf keeps the previous
value of an object whose function returned None.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from stronghold_operator.models.base import InvalidSpec, parse
from stronghold_operator.models.common import MAINTENANCE_ANNOTATION, MAINTENANCE_WINDOWS_ANNOTATION
from stronghold_operator.models.scaling import Claim, ScalingPolicySpec
from stronghold_operator.platforms.kube import Kube
from stronghold_operator.platforms.maintenance import KubeCovered

# What a kopf index looks like to a reader: key -> the values of the objects under it.
Index = Mapping[Any, Iterable[Any]]

# --- HorizontalPodAutoscalers ----------------------------------------------------------------


def hpa_target(body: Mapping[str, Any]) -> dict[tuple[str, str, str], str]:
    """An HPA under the workload it scales: ``{(namespace, kind, name): hpa name}``.

    Read as autoscaling/v1, which every Kubernetes version serves: ``scaleTargetRef`` is
    the same in every version, so no discovery of the newest one is needed.
    """
    meta = body.get("metadata") or {}
    ref = (body.get("spec") or {}).get("scaleTargetRef") or {}
    if not ref.get("kind") or not ref.get("name"):
        return {}
    return {(str(meta.get("namespace")), str(ref["kind"]), str(ref["name"])): str(meta["name"])}


# --- ScalingPolicies -------------------------------------------------------------------------


def scaling_claim(body: Mapping[str, Any]) -> dict[tuple[str, ...], Claim]:
    """A ScalingPolicy under the target it scales (:meth:`TargetRef.scope`).

    A policy whose spec is invalid scales nothing, so it claims nothing: it is never taken
    as the owner of a target, however old.
    """
    meta = body.get("metadata") or {}
    try:
        spec = parse(ScalingPolicySpec, body.get("spec") or {})
    except InvalidSpec:
        return {}
    namespace = str(meta.get("namespace"))
    claim = Claim(
        created=str(meta.get("creationTimestamp", "")),
        namespace=namespace,
        name=str(meta.get("name")),
        uid=str(meta.get("uid")),
    )
    return {spec.target_ref.scope(namespace): claim}


class IndexedAutoscalers:
    """The scaling service's Autoscalers port, answered from the two indexes above."""

    def __init__(self, hpas: Index | None, claims: Index | None) -> None:
        self._hpas: Index = hpas if hpas is not None else {}
        self._claims: Index = claims if claims is not None else {}

    async def hpas(self, namespace: str, kind: str, name: str) -> list[str]:
        return sorted(self._hpas.get((namespace, kind, name), ()))

    async def claims(self, scope: tuple[str, ...]) -> list[Claim]:
        return sorted(self._claims.get(scope, ()))


# --- What a MaintenanceWindow covers ---------------------------------------------------------

_KEPT_ANNOTATIONS = (MAINTENANCE_ANNOTATION, MAINTENANCE_WINDOWS_ANNOTATION)


def covered_entry(body: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """An object a window may cover, under its namespace, slimmed to what a window reads
    every pass: name, labels, the maintenance annotations, whether it is being deleted and
    a ScalingPolicy's ``spec.targetRef``. Status is read (GET) only by the checks that need it.
    """
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    slim: dict[str, Any] = {
        "name": str(meta.get("name")),
        "namespace": str(meta.get("namespace")),
        "labels": dict(meta.get("labels") or {}),
        "annotations": {k: str(annotations[k]) for k in _KEPT_ANNOTATIONS if k in annotations},
    }
    if meta.get("deletionTimestamp") is not None:
        slim["deletionTimestamp"] = str(meta["deletionTimestamp"])
    entry: dict[str, Any] = {"metadata": slim}
    target = (body.get("spec") or {}).get("targetRef")
    if isinstance(target, Mapping):
        entry["spec"] = {"targetRef": dict(target)}
    return {slim["namespace"]: entry}


class IndexedCovered:
    """The MaintenanceWindow service's CoveredObjects port: the objects of a namespace from
    the covered kinds' indexes; reads of one object and annotation writes go to the API."""

    def __init__(self, kube: Kube, namespace: str, indexes: Mapping[str, Index | None]) -> None:
        self.api = KubeCovered(kube, namespace)
        self.namespace = namespace
        self.indexes = indexes  # plural -> its index (None: the kind is not indexed)

    async def list(self, plural: str) -> list[dict[str, Any]] | None:
        index = self.indexes.get(plural)
        if index is None:
            return None
        # Copies: the service updates what it wrote in place; kopf's values stay untouched.
        return [copy.deepcopy(dict(e)) for e in index.get(self.namespace, ())]

    async def get(self, plural: str, name: str) -> dict[str, Any] | None:
        return await self.api.get(plural, name)

    async def set_annotations(
        self, plural: str, name: str, updates: Mapping[str, Callable[[str | None], str | None]]
    ) -> bool:
        return await self.api.set_annotations(plural, name, updates)
