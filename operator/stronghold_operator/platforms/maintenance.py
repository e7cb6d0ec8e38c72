"""Kubernetes adapters of the MaintenanceWindow service's ports (services/maintenance.py):
the covered objects and their annotations, the snapshotted workloads, the snapshot ConfigMap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from stronghold_operator.platforms.kube import (
    CONFIGMAPS,
    GROUP,
    PODS,
    ApiError,
    Kube,
    is_conflict,
    is_not_found,
    ours,
    workload,
)

WINDOW_LABEL = f"{GROUP}/maintenance-window"


class AnnotationConflict(RuntimeError):
    """An annotation patch kept conflicting with other writers; try again shortly."""


class KubeCovered:
    """The objects of our kinds in one namespace, read and annotated."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace

    async def list(self, plural: str) -> list[dict[str, Any]] | None:
        """Every object of the kind; None when its CRD is not installed."""
        try:
            return await self.kube.list(ours(plural), self.namespace)
        except ApiError as exc:
            if exc.status != 404:
                raise
            return None

    async def get(self, plural: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.kube.get(ours(plural), name, self.namespace)
        except ApiError as exc:
            if is_not_found(exc):
                return None
            raise

    async def set_annotations(
        self, plural: str, name: str, updates: Mapping[str, Callable[[str | None], str | None]]
    ) -> bool:
        """Set annotations from their current values (``update(old) -> new or None``), in
        one patch.

        Optimistic concurrency: the patch carries the resourceVersion it was computed from,
        and is recomputed on a conflict, so two windows editing the same list never lose a
        name. Returns False when the object is gone.
        """
        for _ in range(5):
            obj = await self.get(plural, name)
            if obj is None:
                return False
            meta = obj["metadata"]
            current = meta.get("annotations") or {}
            changes = {}
            for key, update in updates.items():
                new = update(current.get(key))
                if new != current.get(key):
                    changes[key] = new
            if not changes:
                return True
            body = {
                "metadata": {"annotations": changes, "resourceVersion": meta["resourceVersion"]}
            }
            try:
                await self.kube.patch(ours(plural), name, self.namespace, body)
                return True
            except ApiError as exc:
                if is_not_found(exc):
                    return False
                if not is_conflict(exc):
                    raise
        raise AnnotationConflict(f"{plural}/{name}: annotation kept conflicting")


class KubeWorkloads:
    """Deployments/StatefulSets and their Pods, as plain dicts (what a snapshot records)."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace

    async def read(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.kube.get(workload(kind), name, self.namespace)
        except ApiError as exc:
            if is_not_found(exc):
                return None
            raise

    async def pods(self, match_labels: Mapping[str, str]) -> list[dict[str, Any]]:
        return await self.kube.list(PODS, self.namespace, labels=dict(match_labels))


class KubeSnapshots:
    """The window's snapshot ConfigMaps; ``adopt`` makes a new one the window's own."""

    def __init__(
        self, kube: Kube, namespace: str, window: str, adopt: Callable[[dict[str, Any]], None]
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.window = window
        self.adopt = adopt

    async def store(self, name: str, key: str, text: str) -> None:
        """Create the ConfigMap or add ``key`` to it (it exists from the pre-checks)."""
        cm: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "labels": {WINDOW_LABEL: self.window}},
            "data": {key: text},
        }
        self.adopt(cm)
        try:
            await self.kube.create(CONFIGMAPS, self.namespace, cm)
        except ApiError as exc:
            if not is_conflict(exc):
                raise
            await self.kube.patch(CONFIGMAPS, name, self.namespace, {"data": {key: text}})

    async def read(self, name: str, key: str) -> str | None:
        try:
            cm = await self.kube.get(CONFIGMAPS, name, self.namespace)
        except ApiError as exc:
            if is_not_found(exc):
                return None
            raise
        text = (cm.get("data") or {}).get(key)
        return str(text) if text else None
