"""HealthPolicy ``logs`` checks on the pods of a Deployment, through the pods/log API of the
real cluster (the kubelet behind the node's address, testbed/node_net.py).

The Deployment runs the same web server as the Compose test (logs_kit.SERVER: a real
combined access log on stdout and a careless line quoting the session cookie on stderr) on
the host network, listening on 127.0.0.1. The real operator, under its ServiceAccount (whose
Role grants pods/log get and nothing more for logs), reads the pods' logs every 2 s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.integration import kit
from tests.integration.logs_kit import IMAGE, SERVER, answers, security_scenario

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]


def web_deployment(port: int) -> dict[str, Any]:
    labels = {"app": "web"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "hostNetwork": True,
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": "web",
                            "image": IMAGE,
                            "imagePullPolicy": "Never",
                            # python3 -c: sys.argv[1] is the port.
                            "command": ["python3", "-u", "-c", SERVER, str(port)],
                        }
                    ],
                },
            },
        },
    }


def test_security_events_from_a_deployments_pod_logs(
    namespace: str, run_operator: Callable[..., kit.OperatorProcess]
) -> None:
    port = kit.free_port()
    kit.apply_in(namespace, web_deployment(port))
    kit.kubectl("rollout", "status", "deployment/web", "-n", namespace, "--timeout=120s")
    kit.wait_until("the web server answering", lambda: answers(port), timeout=60)
    source = {"pods": {"targetRef": {"kind": "Deployment", "name": "web"}, "container": "web"}}
    security_scenario(namespace, port, source, run_operator)
