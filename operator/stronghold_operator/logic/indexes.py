"""What the operator keeps in kopf indexes instead of LISTing every pass: the index functions.

kopf fills an index from the watches it runs anyway and keeps it current; it starts no
other handler before every index is complete. These functions are pure (a body in,
``{key: value}`` out). An index function returns ``{}`` (never None) for an object that no
longer belongs in the index: kopf keeps the previous value of an object whose function
returned None. The ports that answer from the indexes are in platforms/indexes.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stronghold_operator.models.base import InvalidSpec, parse
from stronghold_operator.models.common import MAINTENANCE_ANNOTATION, MAINTENANCE_WINDOWS_ANNOTATION
from stronghold_operator.models.scaling import Claim, ScalingPolicySpec


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
