"""The operator deployed like a user deploys it: its image built locally, `kubectl apply -k`,
running as a Pod under its ServiceAccount; one object of each kind reconciles (a real backup
completes) and no RBAC denial appears in its logs (read through Docker) or Events.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stronghold_testbed import operator_image
from tests.integration import kit
from tests.support.workloads import hostpath_claim

pytestmark = [pytest.mark.integration, pytest.mark.serial, pytest.mark.timeout(900)]

OPERATOR_NS = "stronghold-system"
LABEL = "app.kubernetes.io/name=stronghold-operator"
PG = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-qtA"]


def _operator_pod() -> dict[str, Any] | None:
    pods = kit.kubectl_json("get", "pods", "-n", OPERATOR_NS, "-l", LABEL)["items"]
    ready = [
        p
        for p in pods
        if all(c.get("ready") for c in p["status"].get("containerStatuses", []) or [{}])
        and p["status"].get("containerStatuses")
    ]
    return ready[0] if ready else None


def _container_logs(pod: dict[str, Any]) -> str:
    # `kubectl logs` needs a node address the testbed's node does not have: ask Docker, for
    # every operator container the pod has had (a restart's predecessor says why it ended).
    labels = [
        f"io.kubernetes.pod.uid={pod['metadata']['uid']}",
        "io.kubernetes.container.name=operator",
    ]
    filters = [arg for label in labels for arg in ("--filter", f"label={label}")]
    ids = subprocess.run(
        ["docker", "ps", "-aq", *filters], capture_output=True, text=True, check=True
    ).stdout.split()
    assert ids, f"no operator container of pod {pod['metadata']['name']} in Docker"
    out = []
    for cid in reversed(ids):  # oldest first
        proc = subprocess.run(["docker", "logs", cid], capture_output=True, text=True, check=True)
        out.append(proc.stdout + proc.stderr)
    return "".join(out)


@pytest.fixture
def deployed(apply_crds: list[str]) -> Iterator[dict[str, Any]]:
    operator_image.build()
    # A rebuilt image under the same tag: start from no Deployment, so the one pod runs this
    # build. (A rollout restart started the new hostNetwork pod while the old one still held
    # its ports: "Address already in use", a restart the test then counted.)
    kit.delete_incluster_operator()
    kit.kubectl("apply", "-k", str(kit.REPO / "manifests/overlays/local"))
    kit.kubectl(
        "rollout", "status", "deployment/stronghold-operator", "-n", OPERATOR_NS, "--timeout=180s"
    )
    pod = kit.wait_until("the operator pod to be ready", _operator_pod, timeout=180)
    yield pod
    kit.delete_incluster_operator()


@pytest.fixture
def database() -> Iterator[str]:
    name = f"incluster_{uuid.uuid4().hex[:8]}"
    subprocess.run([*PG, "-c", f"CREATE DATABASE {name}"], check=True)
    subprocess.run(
        [
            *PG,
            "-d",
            name,
            "-c",
            "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 250);",
        ],
        check=True,
    )
    yield name
    subprocess.run([*PG, "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], check=False)


# ``namespace`` first: fixtures tear down in reverse, so the namespace goes after the operator.
def test_operator_pod_reconciles_every_kind_without_rbac_denials(
    namespace: str, deployed: dict[str, Any], database: str, tmp_path: Path
) -> None:
    pod = deployed
    spec = pod["spec"]
    assert spec["serviceAccountName"] == "stronghold-operator"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True

    backups = tmp_path / "backups"
    backups.mkdir()
    backups.chmod(0o777)  # the Job runs as uid 999
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "db",
                "namespace": namespace,
                # The HealthPolicy below may send it to this PostgreSQL only (docs/security.md).
                "annotations": {"ops.stronghold.io/allowed-destinations": "127.0.0.1:5432"},
            },
            "stringData": {"password": "incluster-secret-pw"},
        },
        *hostpath_claim(namespace, "backups", backups),
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "worker", "namespace": namespace, "labels": {"tier": "app"}},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "worker"}},
                "template": {
                    "metadata": {"labels": {"app": "worker"}},
                    "spec": {
                        "hostNetwork": True,
                        "terminationGracePeriodSeconds": 1,
                        "containers": [
                            {
                                "name": "w",
                                "image": "stronghold/busybox:1",
                                "imagePullPolicy": "Never",
                                "command": ["sh", "-c", "sleep 3600"],
                                "resources": {"requests": {"cpu": "100m", "memory": "32Mi"}},
                            }
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "ops.stronghold.io/v1alpha1",
            "kind": "HealthPolicy",
            "metadata": {"name": "platform", "namespace": namespace, "labels": {"tier": "app"}},
            "spec": {
                "interval": "10s",
                "checks": [
                    {"name": "cache", "memcached": {"address": "127.0.0.1:11211"}},
                    {
                        "name": "db",
                        "postgres": {
                            "host": "127.0.0.1",
                            "port": 5432,
                            "database": database,
                            "user": "postgres",
                            "password": {"secretKeyRef": {"name": "db", "key": "password"}},
                        },
                    },
                ],
            },
        },
        {
            "apiVersion": "ops.stronghold.io/v1alpha1",
            "kind": "ScalingPolicy",
            "metadata": {"name": "worker", "namespace": namespace, "labels": {"tier": "app"}},
            "spec": {
                "targetRef": {"kind": "Deployment", "name": "worker"},
                "minReplicas": 1,
                "maxReplicas": 2,
                "interval": "5s",
            },
        },
        {
            "apiVersion": "ops.stronghold.io/v1alpha1",
            "kind": "BackupSchedule",
            "metadata": {
                "name": "nightly",
                "namespace": namespace,
                "labels": {"tier": "app"},
                "annotations": {"ops.stronghold.io/backup-now": "first"},
            },
            "spec": {
                "schedule": "0 2 * * *",
                "timeZone": "Europe/Berlin",
                "database": {
                    "host": "127.0.0.1",
                    "port": 5432,
                    "name": database,
                    "user": "postgres",
                    "password": {"secretKeyRef": {"name": "db", "key": "password"}},
                },
                "storage": {"persistentVolumeClaim": "backups", "path": "nightly"},
                "jobTemplate": {
                    "image": "stronghold/base:bookworm",
                    "imagePullPolicy": "Never",
                    "hostNetwork": True,
                },
            },
        },
        {
            "apiVersion": "ops.stronghold.io/v1alpha1",
            "kind": "MaintenanceWindow",
            "metadata": {"name": "weekly", "namespace": namespace},
            "spec": {
                "schedule": {"cron": "0 2 * * 0", "duration": "2h"},
                "timeZone": "Europe/Berlin",
                "targets": {
                    "healthPolicies": {"selector": {"matchLabels": {"tier": "app"}}},
                    "scalingPolicies": {"selector": {"matchLabels": {"tier": "app"}}},
                },
            },
        },
    ]
    kit.apply({"apiVersion": "v1", "kind": "List", "items": objects})

    def ready(kind: str, name: str) -> dict[str, Any] | None:
        obj = kit.kubectl_json("get", kind, name, "-n", namespace)
        cond = kit.condition(obj, "Ready")
        return obj if cond and cond["status"] == "True" else None

    for kind, name in (
        ("healthpolicy", "platform"),
        ("scalingpolicy", "worker"),
        ("backupschedule", "nightly"),
        ("maintenancewindow", "weekly"),
    ):
        obj = kit.wait_until(f"{kind}/{name} Ready=True", lambda k=kind, n=name: ready(k, n), 180)
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]

    # The on-demand backup really ran as a Job and wrote a verified archive.
    def backed_up() -> dict[str, Any] | None:
        obj = kit.kubectl_json("get", "backupschedule", "nightly", "-n", namespace)
        cond = kit.condition(obj, "LastBackupSucceeded")
        return obj if cond and cond["status"] == "True" else None

    bks = kit.wait_until("a completed backup", backed_up, timeout=300)
    assert kit.condition(bks, "BackupVerified")["status"] == "True"  # type: ignore[index]
    files = sorted(p.name for p in (backups / "nightly").glob("db_backup_*.sql.gz"))
    assert len(files) == 1, files

    logs = _container_logs(pod)
    container = kit.kubectl_json("get", "pod", pod["metadata"]["name"], "-n", OPERATOR_NS)[
        "status"
    ]["containerStatuses"][0]
    assert container["restartCount"] == 0, (
        f"the operator restarted: {container.get('lastState')}\n{logs[-5000:]}"
    )
    events = json.dumps(kit.kubectl_json("get", "events", "-n", namespace)["items"])
    for text in (logs, events):
        assert "forbidden" not in text.lower(), text[-3000:]
    for secret in ("incluster-secret-pw",):
        assert secret not in logs and secret not in events
    # JSON logging as configured in the manifests.
    first = next(line for line in logs.splitlines() if line.startswith("{"))
    assert "message" in json.loads(first)
