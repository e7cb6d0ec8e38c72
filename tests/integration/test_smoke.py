"""The local cluster is a real Kubernetes: apiserver validation, kubelet pods in Docker,
the scale subresource, Jobs with termination messages, and RBAC that denies.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stronghold_testbed import pki
from tests.integration import kit
from tests.support.workloads import busybox_deployment

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SMOKE_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "smoketests.testbed.stronghold.io"},
    "spec": {
        "group": "testbed.stronghold.io",
        "scope": "Namespaced",
        "names": {"plural": "smoketests", "singular": "smoketest", "kind": "SmokeTest"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["replicas"],
                                "properties": {
                                    "replicas": {"type": "integer", "minimum": 1, "maximum": 5}
                                },
                            }
                        },
                    }
                },
            }
        ],
    },
}


def _busybox_deployment(name: str, replicas: int) -> dict[str, Any]:
    return busybox_deployment(name, replicas=replicas, container="sleeper")


def _running_pods(namespace: str, app: str) -> list[dict[str, object]]:
    pods = kit.kubectl_json("get", "pods", "-n", namespace, "-l", f"app={app}")["items"]
    return [
        p
        for p in pods
        if p["status"].get("phase") == "Running" and "deletionTimestamp" not in p["metadata"]
    ]


def _app_containers(namespace: str, app: str) -> list[str]:
    # Every pod is a real Docker container labelled by the kubelet (dockershim).
    return [
        c
        for c in kit.docker_containers(f"io.kubernetes.pod.namespace={namespace}")
        if c in kit.docker_containers("io.kubernetes.container.name=sleeper")
    ]


def _scale(namespace: str, name: str, replicas: int) -> None:
    """Through the scale subresource, as an autoscaler does."""
    body = json.dumps({"spec": {"replicas": replicas}})
    kit.kubectl(
        "patch",
        "deployment",
        name,
        "-n",
        namespace,
        "--subresource=scale",
        "--type=merge",
        "-p",
        body,
    )


def test_crd_applied_and_invalid_object_rejected(testbed: Path, namespace: str) -> None:
    kit.apply(SMOKE_CRD)
    kit.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/smoketests.testbed.stronghold.io",
    )
    good = {
        "apiVersion": "testbed.stronghold.io/v1",
        "kind": "SmokeTest",
        "metadata": {"name": "good", "namespace": namespace},
        "spec": {"replicas": 2},
    }
    kit.wait_until("the new CRD to serve", lambda: "created" in kit.apply(good), timeout=30)
    bad = dict(good, metadata={"name": "bad", "namespace": namespace}, spec={"replicas": 9})
    message = kit.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert "spec.replicas" in message
    assert "should be less than or equal to 5" in message
    assert kit.kubectl("get", "smoketest", "bad", "-n", namespace, check=False).startswith(
        "Error from server (NotFound)"
    )


def test_deployment_pods_run_as_docker_containers_and_scale(namespace: str) -> None:
    kit.apply(
        {
            **_busybox_deployment("sleepers", 1),
            "metadata": {"name": "sleepers", "namespace": namespace},
        }
    )
    kit.wait_until("1 running pod", lambda: len(_running_pods(namespace, "sleepers")) == 1, 90)
    assert len(_app_containers(namespace, "sleepers")) == 1

    # Through the scale subresource, as an autoscaler does.
    _scale(namespace, "sleepers", 3)
    scale = json.loads(
        kit.kubectl(
            "get", "--raw", f"/apis/apps/v1/namespaces/{namespace}/deployments/sleepers/scale"
        )
    )
    assert scale["kind"] == "Scale"
    assert scale["spec"]["replicas"] == 3
    kit.wait_until("3 running pods", lambda: len(_running_pods(namespace, "sleepers")) == 3, 90)
    kit.wait_until("3 containers", lambda: len(_app_containers(namespace, "sleepers")) == 3, 60)

    _scale(namespace, "sleepers", 1)
    kit.wait_until(
        "containers removed", lambda: len(_app_containers(namespace, "sleepers")) == 1, 90
    )


def test_job_completes_with_termination_message(namespace: str) -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "hello", "namespace": namespace},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "hostNetwork": True,
                    "containers": [
                        {
                            "name": "hello",
                            "image": "stronghold/busybox:1",
                            "imagePullPolicy": "Never",
                            "command": [
                                "sh",
                                "-c",
                                'echo \'{"result":"ok","n":42}\' > /dev/termination-log',
                            ],
                        }
                    ],
                }
            },
        },
    }
    kit.apply(job)
    kit.kubectl("wait", "--for=condition=complete", "--timeout=120s", "job/hello", "-n", namespace)
    pods = kit.kubectl_json("get", "pods", "-n", namespace, "-l", "job-name=hello")["items"]
    assert len(pods) == 1
    terminated = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0
    assert json.loads(terminated["message"]) == {"result": "ok", "n": 42}


def test_rbac_denies_the_operator_what_its_role_does_not_grant(
    operator_kubeconfig: Path, namespace: str
) -> None:
    kit.kubectl("create", "secret", "generic", "db", "-n", namespace, "--from-literal=password=x")

    def as_operator(*args: str) -> str:
        import subprocess

        proc = subprocess.run(
            ["kubectl", f"--kubeconfig={operator_kubeconfig}", *args],
            capture_output=True,
            text=True,
            check=False,
        )
        return proc.stdout + proc.stderr

    # Granted: get one Secret by name, read Deployments.
    assert "secret/db" in as_operator("get", "secret", "db", "-n", namespace, "-o", "name")
    assert "Forbidden" not in as_operator("get", "deployments", "-n", namespace)
    # Denied: listing Secrets, deleting Deployments, changing Nodes (it may list them: a
    # backup's systemState source), anything on PersistentVolumes.
    for args in (
        ("get", "secrets", "-n", namespace),
        ("delete", "deployment", "x", "-n", namespace),
        ("label", "node", pki.NODE_NAME, "stronghold-smoke=1"),
        ("get", "persistentvolumes"),
    ):
        out = as_operator(*args)
        assert "Forbidden" in out, (args, out)
        assert "system:serviceaccount:stronghold-system:stronghold-operator" in out
