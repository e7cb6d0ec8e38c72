"""The one busybox Deployment that integration tests and benchmarks run on the local cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

BUSYBOX = "stronghold/busybox:1"  # built locally by the testbed; never pulled
SLEEP = "trap 'exit 0' TERM; sleep 3600 & wait"
# Burns one CPU while ``/switch/burn`` exists (the test's load switch).
BURN = "while true; do if [ -e /switch/burn ]; then :; else sleep 1; fi; done"
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


def burning_deployment(name: str, switch: Path, replicas: int = 1) -> dict[str, Any]:
    """Small pods that each burn their CPU limit while ``switch``/burn exists."""
    return busybox_deployment(name, BURN, replicas=replicas, resources=SMALL, host_dir=switch)


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
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": str(path), "type": "Directory"},  # made by the caller
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


def start_compose_container(
    client: Any, project: str, switch: Path, service: str = "web", *, limits: bool = True
) -> Any:
    """What `docker compose up` would create for ``service``, container number 1: BURN on
    the host network, ``switch`` at /switch."""
    from stronghold_operator.platforms import compose

    extra: dict[str, Any] = {"nano_cpus": 100_000_000, "mem_limit": "32m"} if limits else {}
    return client.containers.run(
        BUSYBOX,
        ["sh", "-c", BURN],
        name=f"{project}-{service}-1",
        detach=True,
        network_mode="host",
        volumes={str(switch): {"bind": "/switch", "mode": "ro"}},
        labels={
            compose.PROJECT: project,
            compose.SERVICE: service,
            compose.NUMBER: "1",
            compose.ONEOFF: "False",
        },
        stop_signal="SIGKILL",  # sh ignores SIGTERM as PID 1; the service would set this too
        **extra,
    )
