"""ScalingPolicy on the local cluster: the real operator scales a real Deployment.

The Deployment's busybox pods burn CPU while a switch file exists in a hostPath directory the
test controls (hostNetwork pods cannot share a port, so there is no web server per pod).
Each pod requests 50m CPU and is limited to 100m, so burning is ~200 % of its request.
Usage reaches the operator through the apiserver's aggregation layer from the testbed's
metrics.k8s.io server (which stands in for metrics-server).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.integration import kit
from tests.integration.conftest import DOCKER_SOCKET
from tests.support.policies import scaling_policy
from tests.support.workloads import burning_deployment, start_compose_container

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def spec_replicas(ns: str, name: str) -> int:
    return int(kit.get(ns, "deployment", name)["spec"]["replicas"])


def running_pods(ns: str, app: str) -> list[str]:
    pods = kit.kubectl_json("get", "pods", "-n", ns, "-l", f"app={app}")["items"]
    return [
        p["metadata"]["name"]
        for p in pods
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]


def status_when(
    ns: str, name: str, probe: Callable[[dict[str, Any]], bool], what: str, timeout: float = 120
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = kit.get(ns, "scalingpolicy", name)
        return obj if probe(obj.get("status") or {}) else None

    return kit.wait_until(what, check, timeout=timeout, interval=1)


def ready_reason(ns: str, name: str, reason: str) -> dict[str, Any]:
    """The policy's status once its Ready condition has ``reason``."""
    return status_when(
        ns, name, lambda s: cond(s, "Ready").get("reason") == reason, f"Ready reason {reason}"
    )["status"]


def decided(ns: str, name: str, reason: str, timeout: float = 120) -> dict[str, Any]:
    """The policy's status once its last decision has ``reason``."""
    return status_when(
        ns,
        name,
        lambda s: s.get("lastDecision", {}).get("reason") == reason,
        f"a decision {reason}",
        timeout,
    )["status"]


def deploy(ns: str, deployment: dict[str, Any]) -> None:
    """Apply a one-replica Deployment and wait for its pod to run."""
    name = deployment["metadata"]["name"]
    kit.apply_in(ns, deployment)
    kit.wait_until(f"the pod of {name}", lambda: len(running_pods(ns, name)) == 1, timeout=90)


def cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def reasons(ns: str, name: str) -> list[str]:
    return [e["reason"] for e in kit.events_for(ns, name)]


def test_scales_up_under_load_and_down_after_sustained_idle(
    namespace: str, switch: Path, metrics_api: None, run_operator: Any
) -> None:
    ns = namespace
    deploy(ns, burning_deployment("web", switch))
    op = run_operator(ns)
    kit.apply_in(ns, scaling_policy("web", "web"))

    st = status_when(
        ns,
        "web",
        lambda s: cond(s, "MetricsAvailable").get("status") == "True",
        "utilisation from metrics.k8s.io",
    )["status"]
    assert cond(st, "Ready")["status"] == "True"
    assert st["target"] == "Deployment/web"
    assert st["currentReplicas"] == 1
    assert st["currentCpuUtilizationPercent"] < 40

    # Load on: every pod burns its 100m limit = 200 % of its 50m request.
    (switch / "burn").touch()
    kit.wait_until("scale-up to 3", lambda: spec_replicas(ns, "web") == 3, timeout=240)
    kit.wait_until("3 running pods", lambda: len(running_pods(ns, "web")) == 3, timeout=120)
    st = decided(ns, "web", "CappedByMax")
    assert st["currentReplicas"] == 3 and st["lastScaleTime"]
    assert cond(st, "ScalingLimited")["status"] == "True"
    assert st["currentCpuUtilizationPercent"] > 80
    assert reasons(ns, "web").count("ScaledUp") == 2
    up_msgs = [e["message"] for e in kit.events_for(ns, "web") if e["reason"] == "ScaledUp"]
    assert any("scale up 1 -> 2: CPU" in m for m in up_msgs), up_msgs

    # Load off: the 30 s timer becomes visible, then one pod at a time goes.
    (switch / "burn").unlink()
    st = status_when(
        ns, "web", lambda s: bool(s.get("belowThresholdsSince")), "belowThresholdsSince"
    )["status"]
    since = datetime.fromisoformat(st["belowThresholdsSince"].replace("Z", "+00:00"))
    assert spec_replicas(ns, "web") == 3
    kit.wait_until("scale-down to 1", lambda: spec_replicas(ns, "web") == 1, timeout=240)
    first_down = min(
        datetime.fromisoformat(e["firstTimestamp"].replace("Z", "+00:00"))
        for e in kit.events_for(ns, "web")
        if e["reason"] == "ScaledDown"
    )
    assert first_down - since >= timedelta(seconds=29)
    assert reasons(ns, "web").count("ScaledDown") == 2
    kit.wait_until("1 running pod", lambda: len(running_pods(ns, "web")) == 1, timeout=120)
    st = status_when(
        ns,
        "web",
        lambda s: s.get("lastDecision", {}).get("reason") in ("AtMin", "SustainedBelowThresholds"),
        "the final decision",
    )["status"]
    assert st["currentReplicas"] == 1
    logs = op.logs()
    assert "scaling pass failed" not in logs and "Traceback" not in logs, logs[-3000:]


def test_dry_run_pause_maintenance_and_conflicts_never_scale(
    namespace: str, switch: Path, metrics_api: None, run_operator: Any
) -> None:
    ns = namespace
    (switch / "burn").touch()  # hot from the start: any policy that acts would scale up
    deploy(ns, burning_deployment("web", switch))
    run_operator(ns)

    # Dry run: decides ScaleUp, records it, does not act.
    kit.apply_in(ns, scaling_policy("web", "web", dryRun=True))
    st = decided(ns, "web", "DryRun", timeout=180)
    assert st["lastDecision"]["action"] == "ScaleUp" and st["lastDecision"]["to"] == 2
    assert st["lastDecision"]["message"].startswith("dry run: would scale up 1 -> 2")
    assert cond(st, "ScalingActive")["reason"] == "DryRun"
    assert "DryRun" in reasons(ns, "web")

    # pausedUntil in the future.
    until = (datetime.now(UTC) + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    kit.kubectl(
        "patch", "scalingpolicy", "web", "-n", ns, "--type=merge",
        "-p", json.dumps({"spec": {"dryRun": False, "pausedUntil": until}}),
    )  # fmt: skip
    st = decided(ns, "web", "Paused")
    assert until in st["lastDecision"]["message"].replace("+00:00", "Z")
    assert cond(st, "ScalingActive")["status"] == "False"

    # The maintenance annotation freezes it (and says which window).
    kit.kubectl(
        "patch", "scalingpolicy", "web", "-n", ns, "--type=merge",
        "-p", json.dumps({"spec": {"pausedUntil": None}}),
    )  # fmt: skip
    kit.kubectl("annotate", "scalingpolicy", "web", "-n", ns, "ops.stronghold.io/maintenance=db")
    st = decided(ns, "web", "MaintenanceWindow")
    assert "'db'" in st["lastDecision"]["message"]

    # An HPA on the same Deployment (served version found by discovery): not fought over.
    versions = kit.kubectl("api-versions")
    hpa_version = "autoscaling/v2" if "autoscaling/v2\n" in versions else "autoscaling/v2beta2"
    hpa = {
        "apiVersion": hpa_version,
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web-hpa"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 1,
            "maxReplicas": 1,  # the HPA itself cannot move it either
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 80},
                    },
                }
            ],
        },
    }
    kit.apply_in(ns, hpa)
    kit.kubectl("annotate", "scalingpolicy", "web", "-n", ns, "ops.stronghold.io/maintenance-")
    st = ready_reason(ns, "web", "ConflictingAutoscaler")
    assert cond(st, "Ready")["status"] == "False"
    assert "web-hpa" in cond(st, "Ready")["message"]
    assert spec_replicas(ns, "web") == 1
    assert "ScaledUp" not in reasons(ns, "web")

    # Without the HPA it scales (so the gates, not the load, were holding it).
    kit.kubectl("delete", "hpa", "web-hpa", "-n", ns)
    kit.wait_until("scale-up after the HPA left", lambda: spec_replicas(ns, "web") >= 2, 120)

    # A second policy on the same Deployment is refused; the older one keeps it.
    kit.apply_in(ns, scaling_policy("web-2", "web"))
    st = ready_reason(ns, "web-2", "ConflictingAutoscaler")  # the second policy is refused
    assert "ScalingPolicy " + ns + "/web already scales" in cond(st, "Ready")["message"]
    assert cond(kit.get(ns, "scalingpolicy", "web")["status"], "Ready")["status"] == "True"


def test_bad_input_is_reported_and_never_scales(
    namespace: str, switch: Path, metrics_api: None, run_operator: Any
) -> None:
    ns = namespace
    no_requests = burning_deployment("bare", switch)
    del no_requests["spec"]["template"]["spec"]["containers"][0]["resources"]
    deploy(ns, no_requests)
    run_operator(ns)
    kit.apply_in(ns, scaling_policy("bare", "bare"))
    kit.apply_in(ns, scaling_policy("ghost", "nothing-here"))
    kit.apply_in(ns, scaling_policy("inverted", "bare", minReplicas=3, maxReplicas=2))

    st = ready_reason(ns, "bare", "MissingRequests")
    assert "no cpu request" in cond(st, "Ready")["message"]
    st = ready_reason(ns, "ghost", "TargetNotFound")
    assert "nothing-here" in cond(st, "Ready")["message"]
    st = ready_reason(ns, "inverted", "InvalidSpec")
    assert "greater than maxReplicas" in cond(st, "Ready")["message"]
    assert spec_replicas(ns, "bare") == 1


def test_compose_target_through_the_operator(
    namespace: str,
    docker_client: Any,
    compose_project: tuple[str, Path],
    run_operator: Any,
) -> None:
    """A ScalingPolicy in the cluster drives a Compose service on the local Docker Engine."""
    from stronghold_operator.platforms import compose

    ns = namespace
    client = docker_client
    project, switch = compose_project
    target = compose.ComposeTarget(project, "web", DOCKER_SOCKET)
    start_compose_container(client, project, switch)
    (switch / "burn").touch()
    run_operator(ns)
    kit.apply_in(
        ns,
        scaling_policy(
            "compose",
            "unused",
            targetRef={"kind": "ComposeService", "project": project, "service": "web"},
            maxReplicas=2,
        ),
    )
    kit.wait_until(
        "a second container",
        lambda: len(compose.containers(client, target, running=True)) == 2,
        timeout=120,
    )
    st = status_when(
        ns,
        "compose",
        lambda s: s.get("currentReplicas") == 2 and bool(s.get("lastScaleTime")),
        "status after the scale-up",
    )["status"]
    assert st["target"] == f"compose:{project}/web"
    assert cond(st, "MetricsAvailable")["message"].endswith("of limits")
    assert "ScaledUp" in reasons(ns, "compose")
    (switch / "burn").unlink()
    kit.wait_until(
        "back to one container",
        lambda: (
            [c.name for c in compose.containers(client, target, running=False)]
            == [f"{project}-web-1"]
        ),
        timeout=180,
    )
    assert "ScaledDown" in reasons(ns, "compose")


def test_proportional_steps_do_not_wait_out_the_cooldown(
    namespace: str, switch: Path, metrics_api: None, run_operator: Any
) -> None:
    """Issue 22: the default step jumps to what the load needs (1 -> 3 on 200 % of the
    request), and the next step follows once the 3 pods are measured, long before the 10 min
    scale-up cooldown would end."""
    ns = namespace
    deploy(ns, burning_deployment("web", switch))
    op = run_operator(ns)
    # A dry run first, until it sees the whole load (the first samples of a warming pod are
    # partial): then the first real decision is made on 200 %.
    kit.apply_in(
        ns,
        scaling_policy(
            "web", "web", maxReplicas=4, interval="3s", dryRun=True, scaleUp={"cooldown": "10m"}
        ),
    )
    (switch / "burn").touch()
    status_when(
        ns,
        "web",
        lambda s: "would scale up 1 -> 3" in s.get("lastDecision", {}).get("message", ""),
        "a dry run that sees the whole load",
    )
    kit.kubectl(
        "patch", "scalingpolicy", "web", "-n", ns, "--type=merge", "-p", '{"spec":{"dryRun":false}}'
    )
    kit.wait_until("the jump to 3", lambda: spec_replicas(ns, "web") >= 3, timeout=120)
    kit.wait_until("4 replicas", lambda: spec_replicas(ns, "web") == 4, timeout=180)
    ups = [e for e in kit.events_for(ns, "web") if e["reason"] == "ScaledUp"]
    msgs = [e["message"] for e in ups]
    assert len(ups) == 2, msgs
    assert any("scale up 1 -> 3: CPU" in m for m in msgs), msgs
    second = next(e for e in ups if "scale up 3 -> 4" in e["message"])
    assert "3 replicas measured since the last scale-up, cooldown ended" in second["message"]

    def at(e: dict[str, Any]) -> datetime:
        return datetime.fromisoformat(e["firstTimestamp"].replace("Z", "+00:00"))

    gap = at(second) - min(at(e) for e in ups)
    assert timedelta(seconds=3) <= gap < timedelta(minutes=3), gap
    st = decided(ns, "web", "CappedByMax")
    assert st["currentReplicas"] == 4 and cond(st, "ScalingLimited")["status"] == "True"
    (switch / "burn").unlink()
    logs = op.logs()
    assert "scaling pass failed" not in logs and "Traceback" not in logs, logs[-3000:]
