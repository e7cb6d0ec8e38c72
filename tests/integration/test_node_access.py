"""The apiserver reaches the kubelet on the node's address (testbed/node_net.py):
``kubectl logs``, ``exec`` and ``port-forward`` work as on any cluster.
"""

from __future__ import annotations

import re
import subprocess
import urllib.request
from dataclasses import dataclass
from typing import Any

import pytest

from stronghold_testbed import node_net
from tests.integration import kit
from tests.support.workloads import BUSYBOX

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PAGE = "served-from-the-pod"


@dataclass(frozen=True)
class Talker:
    namespace: str
    port: int  # httpd's, on the node's loopback


def _pod(namespace: str, port: int) -> dict[str, Any]:
    """Two log lines, a page, then a web server on loopback. On the host network: the
    testbed has no pod network, and the kubelet recreates the sandbox of a pod that has no
    IP every few seconds (an exec then finds its container gone)."""
    script = (
        "echo stronghold-line-1; echo stronghold-line-2; mkdir -p /www; "
        f"echo {PAGE} > /www/index.html; exec httpd -f -p 127.0.0.1:{port} -h /www"
    )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "talker", "namespace": namespace},
        "spec": {
            "hostNetwork": True,
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "web",
                    "image": BUSYBOX,
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c", script],
                    # Ready once the page is served, not when the shell starts: a loaded CI
                    # run's port-forward reached the pod before httpd listened.
                    "readinessProbe": {
                        "exec": {
                            "command": [
                                *("wget", "-q", "-O", "/dev/null"),
                                f"http://127.0.0.1:{port}/index.html",
                            ]
                        },
                        "periodSeconds": 1,
                    },
                }
            ],
        },
    }


@pytest.fixture
def talker(namespace: str) -> Talker:
    port = kit.free_port()
    kit.apply(_pod(namespace, port))
    kit.kubectl("wait", "--for=condition=Ready", "--timeout=90s", "pod/talker", "-n", namespace)
    return Talker(namespace, port)


def test_node_has_an_address_inside_the_testbeds_namespace() -> None:
    nodes = kit.kubectl_json("get", "nodes")["items"]
    assert len(nodes) == 1
    addresses = {a["type"]: a["address"] for a in nodes[0]["status"]["addresses"]}
    assert addresses["InternalIP"] == node_net.NODE_ADDR
    # The address is the namespace's, not the host's: the host's own interfaces lack it.
    host = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, check=True).stdout
    assert f" {node_net.NODE_ADDR}/".encode() not in host
    inside = subprocess.run(
        ["ip", "netns", "exec", node_net.NETNS, "ip", "-o", "-4", "addr"],
        capture_output=True,
        check=True,
    ).stdout
    assert f" {node_net.NODE_ADDR}/".encode() in inside


def test_kubectl_logs(talker: Talker) -> None:
    ns = talker.namespace
    kit.wait_until(
        "both log lines",
        lambda: "stronghold-line-2" in kit.kubectl("logs", "talker", "-n", ns),
        timeout=30,
    )
    out = kit.kubectl("logs", "talker", "-n", ns, "--timestamps")
    lines = [line for line in out.splitlines() if "stronghold-line" in line]
    assert [line.split(" ", 1)[1] for line in lines] == ["stronghold-line-1", "stronghold-line-2"]
    # The RFC 3339 timestamps the logs check resumes from (sinceTime) are there.
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z ", line) for line in lines)
    tail = kit.kubectl("logs", "talker", "-n", ns, "--tail=1")
    assert tail.strip() == "stronghold-line-2"


def _container(namespace: str) -> dict[str, Any]:
    """The talker container's status: why it stopped, should an exec find it not running."""
    pod = kit.kubectl_json("get", "pod", "talker", "-n", namespace)
    statuses = pod["status"].get("containerStatuses") or [{}]
    return {"phase": pod["status"].get("phase"), **statuses[0]}


def _exec(ns: str, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", "exec", "talker", "-n", ns, "--", *command],
        capture_output=True,
        text=True,
        check=False,
    )


def test_kubectl_exec(talker: Talker) -> None:
    ns = talker.namespace
    proc = _exec(ns, "cat", "/www/index.html")
    assert proc.returncode == 0, (proc.stderr, _container(ns))
    assert proc.stdout.strip() == PAGE
    # The remote command's exit code comes back to kubectl.
    proc = _exec(ns, "sh", "-c", "echo to-stderr >&2; exit 3")
    assert proc.returncode == 3, (proc.stderr, _container(ns))
    assert "to-stderr" in proc.stderr
    # One container all along: the exec ran in the pod the test started.
    assert _container(ns).get("restartCount") == 0, _container(ns)


def test_kubectl_port_forward(talker: Talker) -> None:
    forward = ["port-forward", "-n", talker.namespace, "--address=127.0.0.1"]
    proc = subprocess.Popen(
        ["kubectl", *forward, "pod/talker", f":{talker.port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # "Forwarding from 127.0.0.1:LOCAL -> PORT"
        match = re.search(rf"127\.0\.0\.1:(\d+) -> {talker.port}", first)
        assert match, first
        url = f"http://127.0.0.1:{match.group(1)}/index.html"
        for _ in range(3):  # three requests: one stream each through the same forward
            with urllib.request.urlopen(url, timeout=10) as resp:
                assert resp.read().decode().strip() == PAGE
    finally:
        proc.terminate()
        proc.wait(timeout=10)
