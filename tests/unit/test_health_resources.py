"""HealthPolicy resources checks: the model, the bands, classification, the probe's reasons.

The probe is given in-process readers (its injected dependency), so no platform is involved;
the real metrics.k8s.io and Docker Engine paths are in
tests/integration/test_health_resources_e2e.py.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from stronghold_operator.logic import health as logic
from stronghold_operator.models.base import InvalidSpec, parse
from stronghold_operator.models.health import FINDING_CODES, CheckType, HealthPolicySpec
from stronghold_operator.models.scaling import MissingBasis, ReplicaUsage, TargetNotFound, TargetRef
from stronghold_operator.probes.base import ProbeResult
from stronghold_operator.probes.resources import ResourcesProbe

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]
DEPLOYMENT = {"kind": "Deployment", "name": "web"}
COMPOSE = {"kind": "ComposeService", "project": "stronghold", "service": "web"}


def policy(*checks: dict[str, Any], **extra: Any) -> HealthPolicySpec:
    return parse(HealthPolicySpec, {"failureThreshold": 1, "checks": list(checks), **extra})


def resources(ref: dict[str, Any] = DEPLOYMENT, name: str = "res", **extra: Any) -> dict[str, Any]:
    return {"name": name, "resources": {"targetRef": ref, **extra}}


def replica(
    name: str, cpu: float, mem: float, cpu_basis: float = 0.1, mem_basis: float = 100.0
) -> ReplicaUsage:
    # Usage in cores and bytes against a basis of (by default) 100m CPU and 100 bytes.
    return ReplicaUsage(name, cpu, mem, cpu_basis, mem_basis, NOW)


def usage(*replicas: ReplicaUsage) -> ProbeResult:
    return ProbeResult(latency_ms=1500.0, replicas=replicas)


def test_defaults_are_the_guides_table() -> None:
    (check,) = policy(resources()).checks
    assert check.type == "resources" and check.resources is not None
    cpu, mem = check.resources.cpu, check.resources.memory
    assert (cpu.target, cpu.warning, cpu.critical) == (70, 80, 90)
    assert (mem.target, mem.warning, mem.critical) == (80, 85, 95)
    assert check.resources.aggregate == "average"
    (compose,) = policy(resources(COMPOSE)).checks
    assert compose.resources is not None
    assert compose.resources.target_ref.docker_host == "unix:///var/run/docker.sock"


@pytest.mark.parametrize(
    ("check", "field", "words"),
    [
        (resources(cpu={"warning": 90, "critical": 80}), "checks[0].resources.cpu", "warning"),
        (
            resources(memory={"target": 90, "warning": 85, "critical": 95}),
            "checks[0].resources.memory",
            "target",
        ),
        (resources({"kind": "Deployment"}), "checks[0].resources.targetRef", "name"),
        (
            resources({"kind": "ComposeService", "project": "p"}),
            "checks[0].resources.targetRef",
            "project and service",
        ),
        (
            resources({**COMPOSE, "dockerHost": "tcp://169.254.169.254:2375"}),
            "checks[0].resources.targetRef",
            "metadata",
        ),
        (resources(aggregate="median"), "checks[0].resources.aggregate", "average"),
        (
            {"name": "x", "resources": {"targetRef": DEPLOYMENT}, "http": {"url": "http://w/"}},
            "checks[0]",
            "exactly one",
        ),
    ],
)
def test_invalid_resources_name_the_field(check: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        parse(HealthPolicySpec, {"checks": [check]})
    assert err.value.field == field
    assert words.lower() in str(err.value).lower()


def assess(result: ProbeResult, **extra: Any) -> logic.Assessment:
    (check,) = policy(resources(**extra)).checks
    return logic.assess(check, result, None)


def test_average_against_requests_like_scaling_policy() -> None:
    # 2 pods: CPU (0.05 + 0.13) / 0.2 = 90 %, memory (10 + 20) / 200 = 15 %.
    a = assess(usage(replica("web-a", 0.05, 10), replica("web-b", 0.13, 20)))
    assert a.state == "Critical" and a.reason == "CpuCritical"
    assert a.measurements["cpuPercent"] == 90.0 and a.measurements["memoryPercent"] == 15.0
    assert a.measurements["basis"] == "requests" and a.measurements["replicas"] == 2
    assert a.measurements["perReplica"][1] == {
        "name": "web-b",
        "cpuPercent": 130.0,
        "memoryPercent": 20.0,
    }
    assert a.message == "CPU 90% of requests >= 90% (average of 2 pod(s))"
    assert a.latency_ms is None  # reading metrics is not a service latency


def test_max_takes_the_busiest_replica() -> None:
    result = usage(replica("web-a", 0.01, 10), replica("web-b", 0.085, 86))
    avg = assess(result)
    assert avg.state == "Healthy"
    assert avg.message == "CPU and memory within bands of requests (2 pod(s))"
    assert (avg.measurements["cpuPercent"], avg.measurements["memoryPercent"]) == (47.5, 48.0)
    busiest = assess(result, aggregate="max")
    assert busiest.state == "Warning"
    assert {f.code for f in busiest.findings} == {"CpuWarning", "MemoryWarning"}
    assert "web-b, the busiest of 2 pod(s)" in busiest.message


def test_compose_is_against_limits() -> None:
    (check,) = policy(resources(COMPOSE)).checks
    a = logic.assess(check, usage(replica("stronghold-web-1", 0.01, 96)), None)
    assert a.state == "Critical" and a.reason == "MemoryCritical"
    assert (
        a.measurements["basis"] == "limits" and a.measurements["target"] == "compose:stronghold/web"
    )
    assert "of limits" in a.message and "container(s)" in a.message


@pytest.mark.parametrize(
    ("reason", "words"),
    [
        ("MetricsUnavailable", "metrics.k8s.io/v1beta1 answered 503"),
        ("TargetNotFound", "Deployment ns/web not found"),
        ("NoMetrics", "no running replica"),
    ],
)
def test_nothing_to_measure_is_unknown_with_a_reason(reason: str, words: str) -> None:
    a = assess(ProbeResult.unavailable(reason, words, 12.0))
    assert (a.state, a.reason, a.message, a.findings) == ("Unknown", reason, words, ())


def test_warnings_are_p4_criticals_p3_and_rules_override() -> None:
    warm = usage(replica("web-a", 0.082, 10))  # CPU 82 %
    hot = usage(replica("web-a", 0.2, 10))  # CPU 200 % of the request
    for result, severity in ((warm, "P4"), (hot, "P3")):
        p = policy(resources())
        ev = logic.evaluate(p, "web", {}, {"res": result}, None, NOW)
        assert ev.severity == severity
        assert ev.status["incident"]["rootCause"] == "res"
    rules = {
        "rules": [{"severity": "P2", "findings": ["CpuCritical"], "checkTypes": ["resources"]}]
    }
    p = policy(resources(), incidentRules=rules)
    assert logic.evaluate(p, "web", {}, {"res": hot}, None, NOW).severity == "P2"


def test_unknown_resources_open_no_incident_and_keep_the_state() -> None:
    p = policy(resources())
    ok = logic.evaluate(p, "web", {}, {"res": usage(replica("a", 0.01, 1))}, None, NOW)
    gone = ProbeResult.unavailable("MetricsUnavailable", "metrics.k8s.io answered 503")
    ev = logic.evaluate(p, "web", ok.status, {"res": gone}, None, NOW)
    (entry,) = ev.status["checks"]
    assert entry["state"] == "Healthy" and entry["observedState"] == "Unknown"
    # The reason explains the state, which holds; the observation is in the message.
    assert entry["reason"] == "Ok" and ev.severity == "None"
    assert entry["message"].startswith("metrics.k8s.io answered 503")


@given(
    st.lists(
        st.tuples(st.floats(0, 4), st.floats(0, 1e9), st.floats(0.01, 4), st.floats(1, 1e9)),
        min_size=1,
        max_size=8,
    )
)
def test_max_is_never_below_average(rows: list[tuple[float, float, float, float]]) -> None:
    result = usage(*(replica(f"r{i}", *row) for i, row in enumerate(rows)))
    avg = assess(result).measurements
    top = assess(result, aggregate="max").measurements
    assert top["cpuPercent"] >= avg["cpuPercent"] - 0.1
    assert top["memoryPercent"] >= avg["memoryPercent"] - 0.1


# --------------------------------------------------------------------------- the probe


def probe(reader: Any, ref: dict[str, Any] = DEPLOYMENT, timeout_s: float = 1.0) -> ProbeResult:
    (check,) = policy(resources(ref)).checks
    assert check.resources is not None
    return asyncio.run(
        ResourcesProbe(reader).probe(
            check.resources, timeout_s=timeout_s, secrets={}, namespace="shop"
        )
    )


def raising(exc: BaseException) -> Any:
    async def read(ref: TargetRef, namespace: str) -> list[ReplicaUsage]:
        raise exc

    return read


@pytest.mark.parametrize(
    ("exc", "ref", "reason"),
    [
        (TargetNotFound("Deployment shop/web not found"), DEPLOYMENT, "TargetNotFound"),
        (MissingBasis("container 'web' has no cpu request"), DEPLOYMENT, "MissingRequests"),
        (MissingBasis("container x has no CPU limit"), COMPOSE, "MissingLimits"),
        (
            LookupError("metrics.k8s.io/v1beta1 answered 404 Not Found"),
            DEPLOYMENT,
            "MetricsUnavailable",
        ),
        (
            ConnectionError("Docker Engine at unix:///x.sock: refused"),
            COMPOSE,
            "MetricsUnavailable",
        ),
    ],
)
def test_probe_turns_nothing_to_measure_into_reasons(
    exc: BaseException, ref: dict[str, Any], reason: str
) -> None:
    result = probe(raising(exc), ref)
    assert (result.failure, result.reason) == ("Error", reason)
    assert str(exc).split(":")[0] in result.message


def test_probe_passes_the_policy_namespace_and_bounds_the_read() -> None:
    seen: list[tuple[str, str]] = []

    async def read(ref: TargetRef, namespace: str) -> list[ReplicaUsage]:
        seen.append((ref.describe(), namespace))
        return [replica("web-a", 0.01, 1)]

    result = probe(read)
    assert seen == [("Deployment/web", "shop")] and len(result.replicas) == 1

    async def hang(ref: TargetRef, namespace: str) -> list[ReplicaUsage]:
        await asyncio.sleep(30)
        return []

    slow = probe(hang, timeout_s=0.05)
    assert slow.reason == "MetricsUnavailable" and "no usage within 0.05s" in slow.message
    assert probe(lambda *_: _empty()).reason == "NoMetrics"
    unwired = asyncio.run(
        ResourcesProbe().probe(
            policy(resources()).checks[0].resources,  # type: ignore[arg-type]
            timeout_s=1,
            secrets={},
        )
    )
    assert unwired.reason == "MetricsUnavailable"


async def _empty() -> list[ReplicaUsage]:
    return []


# --------------------------------------------------------------------------- the CRD


def _crd_spec() -> dict[str, Any]:
    crd = yaml.safe_load((REPO / "crds/healthpolicy.yaml").read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _undescribed(node: dict[str, Any], path: str) -> list[str]:
    missing = [] if "description" in node else [path]
    for name, child in (node.get("properties") or {}).items():
        missing += _undescribed(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        missing += _undescribed(node["items"], f"{path}[]")
    return missing


def test_crd_knows_the_resources_check() -> None:
    spec = _crd_spec()["properties"]["spec"]
    item = spec["properties"]["checks"]["items"]
    assert {"required": ["resources"]} in item["oneOf"]
    res = item["properties"]["resources"]
    assert _undescribed(res, "resources") == []
    rule = spec["properties"]["incidentRules"]["properties"]["rules"]["items"]["properties"]
    assert rule["findings"]["items"]["enum"] == list(FINDING_CODES)
    assert rule["checkTypes"]["items"]["enum"] == list(CheckType.__args__)  # type: ignore[attr-defined]
    measurements = _crd_spec()["properties"]["status"]["properties"]["checks"]["items"]
    keys = set(measurements["properties"]["measurements"]["properties"])
    a = assess(usage(replica("web-a", 0.01, 1)))
    assert set(a.measurements) <= keys
