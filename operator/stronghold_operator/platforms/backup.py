"""Kubernetes adapters of the BackupSchedule service's ports (services/backup.py): the
schedule's Jobs and pods, its program ConfigMap, and the preflight reads (Secret, PVC).

Every Kubernetes call of the BackupSchedule kind is here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from stronghold_operator.models.backup import LABEL_SCHEDULE, BackupScheduleSpec, schedule_label
from stronghold_operator.platforms.configmaps import ensure_configmap
from stronghold_operator.platforms.kube import (
    CONFIGMAPS,
    DEPLOYMENTS,
    JOBS,
    NODES,
    PODS,
    PVCS,
    SECRETS,
    SERVICES,
    STATEFULSETS,
    ApiError,
    Kind,
    Kube,
    is_conflict,
    is_not_found,
    read_secret_key,
)


class KubeBackupJobs:
    """The Jobs and pods labelled with one schedule, in its namespace."""

    def __init__(self, kube: Kube, namespace: str, schedule: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.selector = {LABEL_SCHEDULE: schedule_label(schedule)}

    async def list(self) -> list[Mapping[str, Any]]:
        return list(await self.kube.list(JOBS, self.namespace, labels=self.selector))

    async def create(self, manifest: Mapping[str, Any]) -> bool:
        try:
            await self.kube.create(JOBS, self.namespace, manifest)
        except ApiError as exc:
            if not is_conflict(exc):
                raise
            return False
        return True

    async def read(self, name: str) -> Mapping[str, Any]:
        return await self.kube.get(JOBS, name, self.namespace)

    async def delete(self, name: str, *, foreground: bool = False) -> None:
        propagation = "Foreground" if foreground else "Background"
        try:
            await self.kube.delete(JOBS, name, self.namespace, propagation=propagation)
        except ApiError as exc:
            if not is_not_found(exc):
                raise


class KubeBackupPods:
    """The pods labelled with one schedule (its Jobs' pods carry the label)."""

    def __init__(self, jobs: KubeBackupJobs) -> None:
        self.jobs = jobs

    async def list(self) -> list[Mapping[str, Any]]:
        jobs = self.jobs
        return list(await jobs.kube.list(PODS, jobs.namespace, labels=jobs.selector))


class KubeProgram:
    """The schedule's program ConfigMap, kept at this release's program (``version_key``)."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    async def ensure(self, manifest: Mapping[str, Any], version_key: str) -> str:
        return await ensure_configmap(self.kube, manifest, version_key)


class KubePreflight:
    """Problems that would leave a Job's pod stuck: missing Secret (or key), missing PVC."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace

    async def problem(self, spec: BackupScheduleSpec) -> tuple[str, str] | None:
        ns = self.namespace
        if spec.database.password is not None:
            ref = spec.database.password.secret_key_ref
            try:
                await read_secret_key(self.kube, ns, ref.name, ref.key)  # value discarded at once
            except LookupError as exc:
                return "SecretMissing", str(exc)
        claim = f"PersistentVolumeClaim {ns}/{spec.storage.claim_name}"
        try:
            pvc = await self.kube.get(PVCS, spec.storage.claim_name, ns)
        except ApiError as exc:
            if is_not_found(exc):
                return "StorageMissing", f"{claim} not found"
            if exc.status == 403:
                return "StorageMissing", f"{claim}: access denied"
            raise
        if (pvc.get("status") or {}).get("phase") == "Lost":
            return "StorageMissing", f"{claim} is Lost"
        for v in spec.sources.volumes:  # a missing source claim would leave the pod Pending
            try:
                await self.kube.get(PVCS, v.claim_name, ns)
            except ApiError as exc:
                if is_not_found(exc) or exc.status == 403:
                    return "StorageMissing", (
                        f"spec.sources.volumes[{v.name}]: PersistentVolumeClaim "
                        f"{ns}/{v.claim_name} not found"
                    )
                raise
        return None


class KubeSources:
    """Reads of one namespace for a run's capture (services/backup_sources.py)."""

    KINDS: ClassVar[dict[str, Kind]] = {
        "ConfigMap": CONFIGMAPS,
        "Deployment": DEPLOYMENTS,
        "StatefulSet": STATEFULSETS,
        "Service": SERVICES,
        "Pod": PODS,
    }

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace

    async def objects(self, kind: str) -> list[Mapping[str, Any]]:
        try:
            return list(await self.kube.list(self.KINDS[kind], self.namespace))
        except ApiError as exc:
            if exc.status == 403:  # RBAC: a fact about the install, not worth a retry loop
                raise PermissionError(
                    f"the operator may not list {self.KINDS[kind].plural} in {self.namespace}"
                ) from None
            raise

    async def nodes(self) -> list[Mapping[str, Any]] | None:
        try:
            return list(await self.kube.list(NODES))
        except ApiError as exc:
            if exc.status == 403:  # a namespaced install may not list nodes: say so, go on
                return None
            raise

    async def secret(self, name: str) -> Mapping[str, Any] | None:
        try:
            return await self.kube.get(SECRETS, name, self.namespace)
        except ApiError as exc:
            if is_not_found(exc):
                return None
            if exc.status == 403:
                raise PermissionError(f"the operator may not get Secret {name}") from None
            raise

    async def put_capture(self, manifest: Mapping[str, Any]) -> None:
        try:
            await self.kube.create(CONFIGMAPS, self.namespace, manifest)
        except ApiError as exc:
            if not is_conflict(exc):
                raise
