"""The ScalingPolicy the integration tests put on their burning workloads.

Fast enough for a test (a decision every few seconds, one pod a step), with room to scale
(1 to 3 replicas); a test overrides what it is about.
"""

from __future__ import annotations

from typing import Any


def scaling_spec(target_ref: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """The spec of a ScalingPolicy of ``target_ref``; ``overrides`` replace whole fields."""
    spec: dict[str, Any] = {
        "targetRef": target_ref,
        "minReplicas": 1,
        "maxReplicas": 3,
        "interval": "5s",
        "scaleUp": {"maxStep": {"pods": 1}, "cooldown": "10s"},
        "scaleDown": {"sustainedFor": "30s", "cooldown": "10s"},
        "metrics": {"maxAge": "90s"},
    }
    spec.update(overrides)
    return spec


def scaling_policy(
    name: str, deployment: str, *, labels: dict[str, str] | None = None, **overrides: Any
) -> dict[str, Any]:
    """A ScalingPolicy object of the Deployment ``deployment``."""
    metadata: dict[str, Any] = {"name": name}
    if labels is not None:
        metadata["labels"] = labels
    return {
        "apiVersion": "ops.stronghold.io/v1alpha1",
        "kind": "ScalingPolicy",
        "metadata": metadata,
        "spec": scaling_spec({"kind": "Deployment", "name": deployment}, **overrides),
    }
