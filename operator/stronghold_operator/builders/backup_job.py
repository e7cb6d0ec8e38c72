"""batch/v1 Job manifests for backups, verification/pruning and restore tests (pure).

Every Job runs the program of its schedule's ConfigMap (:mod:`.backup_program`), mounted
read-only, in one container. Nothing secret is in the
manifest: the password Secret is mounted as a volume and turned into a 0600 ``.pgpass`` in an
emptyDir by the script (a Secret volume with ``fsGroup`` is group-readable, which libpq refuses).
The pod follows the restricted Pod Security profile unless the jobTemplate loosens it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from stronghold_operator.builders.backup_program import (
    ANNOTATION_PROGRAM,
    PROGRAM_MOUNT,
    program_hash,
    program_volume,
)
from stronghold_operator.models.backup import (
    ANNOTATION_SLOT,
    ANNOTATION_TRIGGER,
    LABEL_KIND,
    LABEL_SCHEDULE,
    BackupScheduleSpec,
    ContainerSecurityContext,
    PodSecurityContext,
    schedule_label,
)

__all__ = ["backup_job", "owner_reference"]

Kind = Literal["backup", "verify", "restore-test"]

BACKUP_MOUNT = "/backups"
WORK_MOUNT = "/var/run/stronghold/work"
SECRET_MOUNT = "/var/run/stronghold/secret"
SCRATCH_MOUNT = "/var/run/stronghold/scratch"


def owner_reference(body: Mapping[str, Any]) -> dict[str, Any]:
    """The BackupSchedule as controller owner: deleting it garbage-collects its Jobs."""
    meta = body["metadata"]
    return {
        "apiVersion": body.get("apiVersion", "ops.stronghold.io/v1alpha1"),
        "kind": body.get("kind", "BackupSchedule"),
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _merge(base: dict[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    out = dict(base)
    for key, value in (extra or {}).items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _extra(ctx: ContainerSecurityContext | PodSecurityContext | None) -> dict[str, Any] | None:
    return ctx.manifest() if ctx is not None else None


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# long: one Job manifest, read top to bottom like the YAML it becomes (golden-file tested).
def backup_job(
    *,
    owner: Mapping[str, Any],
    job_name: str,
    kind: Kind,
    spec: BackupScheduleSpec,
    slot: datetime,
    trigger: str,
    protected: Sequence[str] = (),
    restore_file: str | None = None,
) -> dict[str, Any]:
    """The Job for one run. Same inputs, same manifest (golden-file tested)."""
    schedule = owner["metadata"]["name"]
    namespace = owner["metadata"].get("namespace")
    tpl = spec.job_template
    db = spec.database
    labels = {
        "app.kubernetes.io/name": "stronghold-backup",
        "app.kubernetes.io/component": kind,
        "app.kubernetes.io/managed-by": "stronghold-operator",
        LABEL_SCHEDULE: schedule_label(schedule),
        LABEL_KIND: kind,
    }
    pod_labels = {**(tpl.labels or {}), **labels}
    directory = (
        f"{BACKUP_MOUNT}/{spec.storage.path}".rstrip("/") if spec.storage.path else (BACKUP_MOUNT)
    )
    env = [
        {"name": "STRONGHOLD_MODE", "value": kind},
        {"name": "JOB_NAME", "value": job_name},
        {"name": "SLOT", "value": _rfc3339(slot)},
        {"name": "BACKUP_DIR", "value": directory},
        {"name": "BACKUP_FORMAT", "value": spec.format},
        {"name": "GZIP_LEVEL", "value": str(spec.compression.level)},
        {"name": "RETENTION_DAYS", "value": str(spec.retention.days)},
        {"name": "MIN_KEEP", "value": str(spec.retention.min_keep)},
        {"name": "PROTECTED", "value": " ".join(protected)},
        {"name": "PGHOST", "value": db.host},
        {"name": "PGPORT", "value": str(db.port)},
        {"name": "PGDATABASE", "value": db.name},
        {"name": "PGUSER", "value": db.user},
        {"name": "PGSSLMODE", "value": db.sslmode},
        {"name": "PGCONNECT_TIMEOUT", "value": "15"},
        {"name": "PGAPPNAME", "value": f"stronghold-{kind}"},
        {"name": "STRONGHOLD_WORK", "value": WORK_MOUNT},
        {"name": "STRONGHOLD_SECRET", "value": f"{SECRET_MOUNT}/password"},
    ]
    if kind == "restore-test":
        rt = spec.verify.restore_test
        env.append({"name": "RESTORE_FILE", "value": restore_file or ""})
        env.append({"name": "RESTORE_TABLES", "value": ",".join(rt.tables if rt else [])})
        env.append({"name": "RESTORE_TARGET", "value": rt.target if rt else "auto"})
        env.append({"name": "RESTORE_SCRATCH", "value": SCRATCH_MOUNT})
        env.append({"name": "JOB_IMAGE", "value": tpl.image})
    mounts: list[dict[str, Any]] = [
        {"name": "backups", "mountPath": BACKUP_MOUNT},
        {"name": "work", "mountPath": WORK_MOUNT},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "program", "mountPath": PROGRAM_MOUNT, "readOnly": True},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "backups", "persistentVolumeClaim": {"claimName": spec.storage.claim_name}},
        {"name": "work", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
        program_volume(schedule),
    ]
    if kind == "restore-test":
        # The throwaway server's data directory: on the node's disk, gone with the pod.
        mounts.append({"name": "scratch", "mountPath": SCRATCH_MOUNT})
        volumes.append({"name": "scratch", "emptyDir": {}})
    if db.password is not None:
        ref = db.password.secret_key_ref
        mounts.append({"name": "password", "mountPath": SECRET_MOUNT, "readOnly": True})
        volumes.append(
            {
                "name": "password",
                "secret": {
                    "secretName": ref.name,
                    "items": [{"key": ref.key, "path": "password", "mode": 0o440}],
                    "defaultMode": 0o440,
                },
            }
        )
    pod_security: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": tpl.run_as_user,
        "runAsGroup": tpl.run_as_group,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    # Secret volume files belong to root and the fsGroup: with fsGroup the password file is
    # group-readable (0440) for our user, who copies it to a 0600 .pgpass (libpq refuses 0440).
    pod_security["fsGroup"] = tpl.fs_group if tpl.fs_group is not None else tpl.run_as_group
    container_security = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    container: dict[str, Any] = {
        "name": kind,
        "image": tpl.image,
        "imagePullPolicy": tpl.image_pull_policy,
        "command": ["bash", f"{PROGRAM_MOUNT}/backup.sh"],
        "env": env,
        "volumeMounts": mounts,
        "securityContext": _merge(container_security, _extra(tpl.security_context)),
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }
    if tpl.resources:
        container["resources"] = dict(tpl.resources)
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": _merge(pod_security, _extra(tpl.pod_security_context)),
        "containers": [container],
        "volumes": volumes,
    }
    if tpl.host_network:
        pod["hostNetwork"] = True
        pod["dnsPolicy"] = "ClusterFirstWithHostNet"
    if tpl.service_account_name:
        pod["serviceAccountName"] = tpl.service_account_name
    if tpl.node_selector:
        pod["nodeSelector"] = dict(tpl.node_selector)
    if tpl.tolerations:
        pod["tolerations"] = [dict(t) for t in tpl.tolerations]
    metadata: dict[str, Any] = {
        "name": job_name,
        "labels": labels,
        "annotations": {
            ANNOTATION_SLOT: _rfc3339(slot),
            ANNOTATION_TRIGGER: trigger,
            ANNOTATION_PROGRAM: program_hash(),  # the program this Job runs
        },
        "ownerReferences": [owner_reference(owner)],
    }
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            # One attempt per slot: a retry would be a second backup for the same slot.
            "backoffLimit": 0,
            "activeDeadlineSeconds": tpl.active_deadline_seconds,
            "template": {"metadata": {"labels": pod_labels}, "spec": pod},
        },
    }
