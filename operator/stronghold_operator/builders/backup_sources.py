"""The backup Job's additions for ``spec.sources`` and the run's capture ConfigMap (pure).

Volumes are mounted read-only, one per source; the operator's capture (configuration,
encrypted Secrets, system state) reaches the pod as a ConfigMap owned by the Job, so it
goes with the Job. Nothing in it is plaintext Secret data (logic/backup_capture.py).
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Mapping
from typing import Any

from stronghold_operator.models.backup import BackupScheduleSpec

__all__ = ["CAPTURE_MOUNT", "VOLUMES_MOUNT", "capture_configmap", "capture_name", "with_sources"]

VOLUMES_MOUNT = "/var/run/stronghold/volumes"
CAPTURE_MOUNT = "/var/run/stronghold/capture"
_SUFFIX = "-capture"


def capture_name(job_name: str) -> str:
    """``<job>-capture`` (Job names are at most 63 characters, so it always fits)."""
    return job_name + _SUFFIX


def with_sources(manifest: Mapping[str, Any], spec: BackupScheduleSpec) -> dict[str, Any]:
    """A backup Job manifest with the run's sources: read-only volume mounts, the capture
    ConfigMap and ``STRONGHOLD_SOURCES`` (paths and globs only). Unchanged without sources."""
    out = copy.deepcopy(dict(manifest))
    src = spec.sources
    if not src.extra:
        return out
    job = out["metadata"]["name"]
    pod = out["spec"]["template"]["spec"]
    container = pod["containers"][0]
    described: dict[str, Any] = {"volumes": [], "capture": ""}
    for v in src.volumes:
        mount = f"{VOLUMES_MOUNT}/{v.name}"
        pod["volumes"].append(
            {
                "name": f"src-{v.name}",
                "persistentVolumeClaim": {"claimName": v.claim_name, "readOnly": True},
            }
        )
        container["volumeMounts"].append(
            {"name": f"src-{v.name}", "mountPath": mount, "readOnly": True}
        )
        described["volumes"].append(
            {
                "name": v.name,
                "claim": v.claim_name,
                "dir": f"{mount}/{v.path}".rstrip("/"),
                "include": list(v.include),
                "exclude": list(v.exclude),
            }
        )
    if src.captured:
        pod["volumes"].append(
            {"name": "capture", "configMap": {"name": capture_name(job), "defaultMode": 0o444}}
        )
        container["volumeMounts"].append(
            {"name": "capture", "mountPath": CAPTURE_MOUNT, "readOnly": True}
        )
        described["capture"] = CAPTURE_MOUNT
    container["env"].append(
        {"name": "STRONGHOLD_SOURCES", "value": json.dumps(described, sort_keys=True)}
    )
    return out


def capture_configmap(job: Mapping[str, Any], files: Mapping[str, bytes]) -> dict[str, Any]:
    """The capture ConfigMap of one backup Job (``job``: as the apiserver returned it)."""
    meta = job["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": capture_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": {
                "app.kubernetes.io/name": "stronghold-backup",
                "app.kubernetes.io/component": "capture",
                "app.kubernetes.io/managed-by": "stronghold-operator",
            },
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "binaryData": {k: base64.b64encode(v).decode() for k, v in sorted(files.items())},
    }
