"""The one busybox Deployment that integration tests and benchmarks run on the local cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

BUSYBOX = "stronghold/busybox:1"  # built locally by the testbed; never pulled
SLEEP = "trap 'exit 0' TERM; sleep 3600 & wait"
# Small enough that a 2-core node runs several replicas, large enough that BURN shows as load.
SMALL = {"requests": {"cpu": "50m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "32Mi"}}


def busybox_deployment(
    name: str,
    command: str = SLEEP,
    *,
    replicas: int = 1,
    container: str = "web",
    resources: dict[str, Any] | None = None,
    host_dir: Path | None = None,
    mount: str = "/switch",
) -> dict[str, Any]:
    """A hostNetwork Deployment of ``sh -c command``; ``host_dir`` is mounted at ``mount``."""
    spec: dict[str, Any] = {
        "name": container,
        "image": BUSYBOX,
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", command],
    }
    if resources is not None:
        spec["resources"] = resources
    pod: dict[str, Any] = {
        "hostNetwork": True,
        "terminationGracePeriodSeconds": 1,
        "containers": [spec],
    }
    if host_dir is not None:
        spec["volumeMounts"] = [{"name": "switch", "mountPath": mount}]
        pod["volumes"] = [
            {"name": "switch", "hostPath": {"path": str(host_dir), "type": "DirectoryOrCreate"}}
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod},
        },
    }


def hostpath_claim(
    namespace: str, claim: str, path: Path, size: str = "1Gi"
) -> list[dict[str, Any]]:
    """A PVC ``claim`` bound to a new PersistentVolume on ``path`` of this machine (PV first)."""
    pv = f"{claim}-{namespace}"
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "",
                "hostPath": {"path": str(path)},
                "claimRef": {"namespace": namespace, "name": claim},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "",
                "volumeName": pv,
                "resources": {"requests": {"storage": size}},
            },
        },
    ]
