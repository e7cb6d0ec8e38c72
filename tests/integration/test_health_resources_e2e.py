"""HealthPolicy ``resources`` checks against real workloads: healthy at idle, critical burning.

Kubernetes: the real operator on the local cluster watches a real Deployment whose busybox
pod burns CPU while a switch file exists in a hostPath directory the test controls. The pod
requests 100m CPU and is limited to 150m, so burning is ~150 % of its request (Critical at
90 %). Usage comes from metrics.k8s.io (the testbed's metrics server, through the
apiserver's aggregation layer). ``stronghold check --workload`` reads the same through the
admin kubeconfig.

Docker: a Compose-labelled container limited to 0.1 CPU and 32 MiB, read through the real
Docker Engine's stats by ``stronghold check --compose`` and by the operator's own probe.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stronghold_operator.conditions import utcnow
from stronghold_operator.logic import health as logic
from stronghold_operator.models.base import parse
from stronghold_operator.models.health import HealthPolicySpec
from stronghold_operator.platforms.usage import read_usage
from stronghold_operator.probes.resources import ResourcesProbe
from stronghold_operator.probes.runner import Prober
from tests.integration import kit
from tests.integration.conftest import DOCKER_SOCKET as SOCKET
from tests.support.workloads import busybox_deployment, start_compose_container

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]


# --------------------------------------------------------------------------- Kubernetes


def deployment(name: str, switch: Path, *, requests: bool = True) -> dict[str, Any]:
    # Without requests but with limits Kubernetes copies the limits into the requests, so
    # the pod without a basis has neither.
    resources: dict[str, Any] = {}
    if requests:
        resources = {
            "requests": {"cpu": "100m", "memory": "32Mi"},
            "limits": {"cpu": "150m", "memory": "64Mi"},
        }
    return busybox_deployment(name, kit.BURN, resources=resources, host_dir=switch)


def health_policy(name: str, checks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "ops.stronghold.io/v1alpha1",
        "kind": "HealthPolicy",
        "metadata": {"name": name},
        "spec": {"interval": "3s", "failureThreshold": 1, "checks": checks},
    }


def resources_check(ref: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "web-resources", "resources": {"targetRef": ref, **extra}}


def apply(ns: str, obj: dict[str, Any]) -> str:
    return kit.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(obj), check=False)


def running(ns: str, app: str) -> bool:
    pods = kit.kubectl_json("get", "pods", "-n", ns, "-l", f"app={app}")["items"]
    return any(p["status"].get("phase") == "Running" for p in pods)


def check_status(ns: str, name: str) -> dict[str, Any]:
    obj = kit.kubectl_json("get", "healthpolicy", name, "-n", ns)
    checks = (obj.get("status") or {}).get("checks") or [{}]
    return {"policy": obj, **checks[0]}


def wait_check(
    ns: str, name: str, ok: Callable[[dict[str, Any]], bool], what: str, timeout: float = 120
) -> dict[str, Any]:
    last: dict[str, Any] = {}

    def probe() -> dict[str, Any] | None:
        nonlocal last
        last = check_status(ns, name)
        return last if ok(last) else None

    try:
        return kit.wait_until(f"{name}: {what}", probe, timeout=timeout, interval=1)
    except AssertionError as exc:
        shown = {k: v for k, v in last.items() if k != "policy"}
        raise AssertionError(f"{exc}; check status now: {shown}") from None


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(kit.VENV_BIN / "stronghold"), "check", "--json", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_deployment_healthy_at_idle_critical_when_burning(
    namespace: str,
    switch: Path,
    metrics_api: None,
    run_operator: Callable[..., kit.OperatorProcess],
) -> None:
    ns = namespace
    assert "created" in apply(ns, deployment("web", switch))
    # Its own switch directory: without limits it must never burn.
    assert "created" in apply(ns, deployment("bare", switch / "bare", requests=False))
    kit.wait_until("the web pod running", lambda: running(ns, "web"), timeout=90)
    ref = {"kind": "Deployment", "name": "web"}
    apply(ns, health_policy("web", [resources_check(ref)]))
    apply(ns, health_policy("gone", [resources_check({"kind": "Deployment", "name": "nope"})]))
    apply(ns, health_policy("bare", [resources_check({"kind": "Deployment", "name": "bare"})]))
    reversed_bands = resources_check(ref, cpu={"warning": 90, "critical": 80})
    apply(ns, health_policy("reversed", [reversed_bands]))
    op = run_operator(ns)

    # Idle: measured, within the guide's bands, against requests.
    st = wait_check(
        ns,
        "web",
        lambda c: c.get("observedState") == "Healthy" and "cpuPercent" in c["measurements"],
        "Healthy with utilisation",
        timeout=150,
    )
    m = st["measurements"]
    assert m["basis"] == "requests" and m["target"] == "Deployment/web"
    assert m["replicas"] == 1 and m["cpuPercent"] < 70, m
    assert m["perReplica"][0]["name"].startswith("web-")
    assert st["type"] == "resources" and "of requests" in st["message"]
    assert kit.condition(st["policy"], "Healthy")["status"] == "True"  # type: ignore[index]
    assert "latencyMs" not in st  # reading metrics is not a service latency

    # Nothing to measure is Unknown with a reason, never a failure or a crash.
    gone = wait_check(ns, "gone", lambda c: c.get("reason") == "TargetNotFound", "TargetNotFound")
    assert gone["observedState"] == "Unknown" and "nope" in gone["message"]
    bare_st = wait_check(
        ns, "bare", lambda c: c.get("reason") == "MissingRequests", "MissingRequests"
    )
    assert bare_st["observedState"] == "Unknown" and "request" in bare_st["message"]
    rev = kit.condition(kit.kubectl_json("get", "healthpolicy", "reversed", "-n", ns), "Ready")
    assert rev is not None and rev["reason"] == "InvalidSpec"
    assert "spec.checks[0].resources.cpu" in rev["message"]

    # The same from outside the cluster through the admin kubeconfig.
    idle = cli("--workload", "Deployment/web", "-n", ns)
    assert idle.returncode == 0, idle.stdout + idle.stderr
    assert json.loads(idle.stdout)[0]["checks"][0]["state"] == "Healthy"

    # Load on: ~150 % of the CPU request -> Critical, CpuCritical, a P3 incident.
    (switch / "burn").touch()
    st = wait_check(
        ns,
        "web",
        lambda c: c.get("state") == "Critical",
        "Critical while burning",
        timeout=150,
    )
    assert st["reason"] == "CpuCritical" and st["measurements"]["cpuPercent"] >= 90
    assert ">= 90% (average of 1 pod(s))" in st["message"]
    status = st["policy"]["status"]
    healthy = kit.condition(st["policy"], "Healthy")
    assert healthy is not None and healthy["status"] == "False"
    assert status["severity"] == "P3" and status["incident"]["rootCause"] == "web-resources"
    hot = cli("--workload", "Deployment/web", "-n", ns)
    assert hot.returncode == 2, hot.stdout + hot.stderr
    assert json.loads(hot.stdout)[0]["severity"] == "P3"
    with urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=10) as r:
        metrics = r.read().decode()
    assert "stronghold_health_resource_utilisation_percent{" in metrics
    assert f'namespace="{ns}"' in metrics and 'resource="cpu"' in metrics

    # Load off: healthy again, the incident resolved with an Event.
    (switch / "burn").unlink()
    wait_check(ns, "web", lambda c: c.get("state") == "Healthy", "Healthy again", timeout=150)

    # Flap damping closes the incident after flapDamping.resolveAfter (2) quiet rounds.
    def resolved() -> list[str] | None:
        reasons = [e["reason"] for e in kit.events_for(ns, "web")]
        return reasons if "IncidentResolved" in reasons else None

    reasons = kit.wait_until("an IncidentResolved Event", resolved, timeout=60, interval=1)
    assert "IncidentOpened" in reasons


BAD_FOR_APISERVER = [
    ("deployment without name", {"kind": "Deployment"}),
    ("compose without service", {"kind": "ComposeService", "project": "p"}),
    ("unknown kind", {"kind": "DaemonSet", "name": "x"}),
]


@pytest.mark.parametrize(("what", "ref"), BAD_FOR_APISERVER, ids=[b[0] for b in BAD_FOR_APISERVER])
def test_apiserver_rejects_bad_targets(
    what: str, ref: dict[str, Any], namespace: str, apply_crds: Any
) -> None:
    out = apply(namespace, health_policy("bad", [resources_check(ref)]))
    assert "invalid" in out.lower(), f"{what} was accepted: {out}"


# --------------------------------------------------------------------------- Docker


@pytest.fixture
def client(docker_client: Any) -> Any:
    return docker_client


async def probe_once(checks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One round as the operator's daemon runs it: its probe, its reader, its logic."""
    policy = parse(HealthPolicySpec, {"failureThreshold": 1, "checks": checks})

    async def reader(ref: Any, namespace: str) -> Any:
        return await read_usage(None, namespace, ref)

    prober = Prober(resources=ResourcesProbe(reader))
    try:
        results = await prober.run(policy, {}, "default")
    finally:
        await prober.close()
    ev = logic.evaluate(policy, "compose", {}, results, None, utcnow())
    return {c["name"]: c for c in ev.status["checks"]}


def compose_ref(project: str, service: str = "web", host: str = SOCKET) -> dict[str, Any]:
    return {"kind": "ComposeService", "project": project, "service": service, "dockerHost": host}


async def test_compose_service_healthy_at_idle_critical_when_burning(
    client: Any, compose_project: tuple[str, Path], tmp_path: Path
) -> None:
    name, switch = compose_project
    start_compose_container(client, name, switch, "web")
    start_compose_container(client, name, switch, "nolimits", limits=False)

    checks = [
        {"name": "web", "resources": {"targetRef": compose_ref(name)}},
        {"name": "nolimits", "resources": {"targetRef": compose_ref(name, "nolimits")}},
        {"name": "absent", "resources": {"targetRef": compose_ref(name, "absent")}},
        {
            "name": "nodocker",
            "resources": {"targetRef": compose_ref(name, host=f"unix://{tmp_path}/none.sock")},
        },
    ]
    idle = await probe_once(checks)
    web = idle["web"]
    assert web["observedState"] == "Healthy", web
    assert web["measurements"]["basis"] == "limits"
    assert web["measurements"]["cpuPercent"] < 70
    assert web["measurements"]["perReplica"][0]["name"] == f"{name}-web-1"
    assert (idle["nolimits"]["observedState"], idle["nolimits"]["reason"]) == (
        "Unknown",
        "MissingLimits",
    )
    assert (idle["absent"]["observedState"], idle["absent"]["reason"]) == ("Unknown", "NoMetrics")
    nodocker = idle["nodocker"]
    assert (nodocker["observedState"], nodocker["reason"]) == ("Unknown", "MetricsUnavailable")
    assert "none.sock" in nodocker["message"] or "Docker Engine" in nodocker["message"]

    out = cli("--compose", f"{name}/web")
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)[0]["checks"][0]["state"] == "Healthy"

    # Load on: the container uses its whole 0.1-CPU limit (~100 %) -> Critical.
    (switch / "burn").touch()
    hot = (await probe_once(checks[:1]))["web"]
    if hot["observedState"] != "Critical":  # the first stats sample may straddle the switch
        hot = (await probe_once(checks[:1]))["web"]
    assert hot["observedState"] == "Critical", hot
    assert hot["reason"] == "CpuCritical" and hot["measurements"]["cpuPercent"] >= 90
    assert "of limits" in hot["message"]

    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(
        json.dumps(
            {
                "apiVersion": "ops.stronghold.io/v1alpha1",
                "kind": "HealthPolicy",
                "metadata": {"name": "compose"},
                "spec": {"checks": checks[:1]},
            }
        )
    )
    out = cli("-f", str(policy_file))
    assert out.returncode == 2, out.stdout + out.stderr
    report = json.loads(out.stdout)[0]
    assert report["severity"] == "P3" and report["rootCause"] == "web"
