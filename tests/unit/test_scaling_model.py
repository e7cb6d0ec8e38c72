"""ScalingPolicy spec parsing: defaults, targets, and the errors a user sees."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from stronghold_operator.models.base import InvalidSpec, parse
from stronghold_operator.models.scaling import ScalingPolicySpec


def spec(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "targetRef": {"kind": "Deployment", "name": "web"},
        "maxReplicas": 5,
    }
    base.update(extra)
    return base


def test_defaults_are_the_guides_bands() -> None:
    p = parse(ScalingPolicySpec, spec())
    assert p.min_replicas == 1
    assert p.interval == timedelta(seconds=15)
    assert p.scale_up.cpu_above_percent == 80
    assert p.scale_up.memory_above_percent == 85
    assert p.scale_down.cpu_below_percent == 40
    assert p.scale_down.memory_below_percent == 50
    assert p.scale_down.sustained_for == timedelta(minutes=30)
    assert p.metrics_source == "metricsAPI"
    assert not p.dry_run and not p.paused and p.paused_until is None


def test_sustained_for_has_no_one_hour_cap() -> None:
    p = parse(ScalingPolicySpec, spec(scaleDown={"sustainedFor": "6h"}))
    assert p.scale_down.sustained_for == timedelta(hours=6)


def test_compose_target_defaults_to_docker_metrics_and_local_socket() -> None:
    p = parse(
        ScalingPolicySpec,
        spec(targetRef={"kind": "ComposeService", "project": "fs", "service": "web"}),
    )
    assert p.metrics_source == "docker"
    assert p.target_ref.docker_host == "unix:///var/run/docker.sock"
    assert p.target_ref.describe() == "compose:fs/web"


@pytest.mark.parametrize(
    ("extra", "field", "needle"),
    [
        ({"minReplicas": 6}, "", "greater than maxReplicas"),
        ({"targetRef": {"kind": "Deployment"}}, "targetRef", "needs name"),
        ({"targetRef": {"kind": "ComposeService", "project": "p"}}, "targetRef", "service"),
        ({"targetRef": {"kind": "CronJob", "name": "x"}}, "targetRef.kind", "Deployment"),
        ({"scaleDown": {"cpuBelowPercent": 90}}, "", "cpuBelowPercent must be below"),
        ({"scaleUp": {"maxStep": {}}}, "scaleUp.maxStep", "pods, percent"),
        ({"scaleDown": {"sustainedFor": "soon"}}, "scaleDown.sustainedFor", "duration"),
        ({"metrics": {"source": "docker"}}, "", "ComposeService"),
        ({"pausedUntil": "2026-01-01T00:00:00"}, "pausedUntil", "timezone"),
        ({"replicas": 3}, "replicas", "Extra"),
    ],
)
def test_bad_specs_name_the_problem(extra: dict[str, Any], field: str, needle: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        parse(ScalingPolicySpec, spec(**extra))
    assert info.value.field == field
    assert needle.lower() in info.value.message.lower()
