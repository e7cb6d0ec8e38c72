"""Incident objects in the API: create one owned by its HealthPolicy, read what the
evidence is made of (once, at open time), delete (retention)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stronghold_operator.models.incident import KIND, PLURAL, POLICY_LABEL
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


async def gather(kube: Kube, namespace: str) -> Raw:
    """The namespace's ReplicaSets, ControllerRevisions, pods and Events (four LISTs, in
    parallel; a failed one is an error line, never an exception)."""
    raw = Raw()
    raw.replicasets, raw.revisions, raw.pods, raw.events = await asyncio.gather(
        _listed(kube, REPLICASETS, namespace, raw.errors),
        _listed(kube, CONTROLLERREVISIONS, namespace, raw.errors),
        _listed(kube, PODS, namespace, raw.errors),
        _listed(kube, EVENTS, namespace, raw.errors),
    )
    return raw


async def create(kube: Kube, body: Mapping[str, Any]) -> dict[str, Any]:
    return await kube.create(ours(PLURAL), str(body["metadata"]["namespace"]), body)


async def get(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    return await kube.get(ours(PLURAL), name, namespace)


async def delete(kube: Kube, namespace: str, name: str) -> None:
    await kube.delete(ours(PLURAL), name, namespace)
