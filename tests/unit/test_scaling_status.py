"""Pure pieces around the engine: status and conditions, stats parsing, the examples."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from stronghold_operator.logic import scaling as sc
from stronghold_operator.models.base import parse
from stronghold_operator.models.scaling import LastDecision, ScalingPolicySpec, ScalingPolicyStatus
from stronghold_operator.models.status import Condition
from stronghold_operator.platforms import compose, metrics_api
from stronghold_operator.services.scaling import Outcome, desired_status
from stronghold_testbed import metrics_server

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def policy(**extra: Any) -> ScalingPolicySpec:
    raw: dict[str, Any] = {"targetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3}
    raw.update(extra)
    return parse(ScalingPolicySpec, raw)


def conditions(p: ScalingPolicySpec, d: sc.Decision, **kw: Any) -> dict[str, tuple[str, str]]:
    status = desired_status(p, Outcome(d, **kw), sc.ScalingState(), {})
    return {c.type: (c.status, c.reason) for c in status.conditions}


def test_status_of_a_scale_up() -> None:
    p = policy()
    d = sc.decide(p, [sc.Sample(T0, 150, 10)], 1, T0)
    fields = desired_status(p, Outcome(d), sc.next_state(sc.ScalingState(), d), {}).to_status()
    assert fields["currentReplicas"] == 2 and fields["desiredReplicas"] == 2
    assert fields["lastScaleTime"] == "2026-03-01T12:00:00Z"
    assert fields["lastDecision"] == {
        "time": "2026-03-01T12:00:00Z",
        "action": "ScaleUp",
        "from": 1,
        "to": 2,
        "reason": "CpuAboveThreshold",
        "message": d.message,
    }
    assert fields["currentCpuUtilizationPercent"] == 150
    assert conditions(p, d) == {
        "Ready": ("True", "Reconciled"),
        "ScalingActive": ("True", "Active"),
        "ScalingLimited": ("False", "WithinRange"),
        "MetricsAvailable": ("True", "MetricsReported"),
    }


def test_last_decision_time_is_kept_while_the_decision_repeats() -> None:
    p = policy()
    d = sc.decide(p, [sc.Sample(T0, 60, 60)], 2, T0)
    first = desired_status(p, Outcome(d), sc.ScalingState(), {}).to_status()
    later = sc.decide(
        p, [sc.Sample(T0 + timedelta(minutes=1), 61, 60)], 2, T0 + timedelta(minutes=1)
    )
    again = desired_status(p, Outcome(later), sc.ScalingState(), first["lastDecision"])
    again_fields = again.to_status()
    assert again_fields["lastDecision"]["time"] == first["lastDecision"]["time"]


def test_conditions_for_gates() -> None:
    hot = [sc.Sample(T0, 150, 10)]
    assert conditions(policy(), sc.decide(policy(), hot, 1, T0, conflict="HPA x"))["Ready"] == (
        "False",
        "ConflictingAutoscaler",
    )
    dry = policy(dryRun=True)
    assert conditions(dry, sc.decide(dry, hot, 1, T0))["ScalingActive"] == ("False", "DryRun")
    assert conditions(policy(), sc.decide(policy(), hot, 3, T0))["ScalingLimited"] == (
        "True",
        "CappedByMax",
    )
    missing = conditions(policy(), sc.decide(policy(), [], 2, T0), metrics_error="503")
    assert missing["MetricsAvailable"] == ("False", "MetricsUnavailable")
    assert missing["ScalingActive"] == ("False", "MetricsUnavailable")


def test_docker_stats_parsing() -> None:
    stats = {
        "cpu_stats": {
            "cpu_usage": {"total_usage": 3_000_000_000},
            "system_cpu_usage": 20e9,
            "online_cpus": 2,
        },
        "precpu_stats": {"cpu_usage": {"total_usage": 2_000_000_000}, "system_cpu_usage": 18e9},
        "memory_stats": {"usage": 50_000_000, "stats": {"total_inactive_file": 10_000_000}},
    }
    assert compose.cpu_cores(stats) == 1.0
    assert compose.memory_bytes(stats) == 40_000_000
    assert metrics_server.working_set(stats) == 40_000_000
    assert compose._limits({"HostConfig": {"NanoCpus": 500_000_000, "Memory": 64 << 20}}) == (
        0.5,
        float(64 << 20),
    )
    assert compose._limits({"HostConfig": {"CpuQuota": 50_000, "CpuPeriod": 100_000}}) == (0.5, 0.0)


def test_pod_metrics_round_trip() -> None:
    usage = metrics_server.PodUsage(
        "ns",
        "web-1",
        T0,
        10.0,
        {"app": "web"},
        [metrics_server.ContainerUsage("a", 250_000_000, 64 << 20)],
    )
    item = metrics_server.pod_metrics(usage)
    assert item["containers"][0]["usage"] == {"cpu": "250000000n", "memory": "65536Ki"}
    cpu, mem, when = metrics_api.parse_pod_metrics(item)
    assert (cpu, mem, when) == (0.25, float(64 << 20), T0)


def test_label_selectors() -> None:
    labels = {"app": "web", "tier": "front"}
    m = metrics_server.matches
    assert m("", labels) and m("app=web", labels) and m("app==web,tier", labels)
    assert not m("app=db", labels) and not m("app!=web", labels) and not m("!tier", labels)
    assert m("tier in (front, back)", labels) and not m("tier notin (front)", labels)
    assert not m("zone in (a)", labels) and m("zone notin (a)", labels)


def test_examples_parse_and_match_the_crd() -> None:
    crd = yaml.safe_load((ROOT / "crds/scalingpolicy.yaml").read_text())
    version = crd["spec"]["versions"][0]
    assert crd["spec"]["names"]["shortNames"] == ["spol"]
    assert [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")] == [
        "Ready",
        "Target",
        "Replicas",
        "Desired",
        "Last Decision",
        "Age",
    ]
    for name in ("scalingpolicy-minimal.yaml", "scalingpolicy-full.yaml"):
        for doc in yaml.safe_load_all((ROOT / "examples" / name).read_text()):
            assert doc["kind"] == "ScalingPolicy"
            parse(ScalingPolicySpec, doc["spec"])


def _walk(schema: dict[str, Any], path: str) -> list[str]:
    missing = [] if "description" in schema or path in ("", ".metadata") else [path]
    for key, sub in (schema.get("properties") or {}).items():
        missing += _walk(sub, f"{path}.{key}")
    if "items" in schema:
        missing += _walk(schema["items"], f"{path}[]")
    return missing


def test_every_crd_field_is_described() -> None:
    crd = yaml.safe_load((ROOT / "crds/scalingpolicy.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _walk(schema, "") == []


def _aliases(model: type[BaseModel]) -> set[str]:
    return {f.alias or name for name, f in model.model_fields.items()}


def test_status_model_and_crd_agree() -> None:
    crd = yaml.safe_load((ROOT / "crds/scalingpolicy.yaml").read_text())
    status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert set(status["properties"]) == _aliases(ScalingPolicyStatus)
    assert set(status["properties"]["lastDecision"]["properties"]) == _aliases(LastDecision)
    assert set(status["properties"]["conditions"]["items"]["properties"]) == _aliases(Condition)


def test_status_timestamps_are_rfc3339_with_z() -> None:
    local = datetime(2026, 3, 1, 14, 0, 5, 999_000, tzinfo=timezone(timedelta(hours=2)))
    status = ScalingPolicyStatus(
        last_scale_time=local,
        below_thresholds_since=None,
        conditions=[Condition(type="Ready", status="True", last_transition_time=local)],
    ).to_status()
    assert status["lastScaleTime"] == "2026-03-01T12:00:05Z"
    assert status["conditions"][0]["lastTransitionTime"] == "2026-03-01T12:00:05Z"
    # Set to None: written as null (deleted); never set: left out (left alone).
    assert status["belowThresholdsSince"] is None and "lastScaleUpTime" not in status
    with pytest.raises(ValidationError):
        ScalingPolicyStatus(last_scale_time=datetime(2026, 3, 1))  # naive: refused
