"""Schema-driven fuzzing of all four kinds: whatever the CRD's schema accepts, the operator
parses into a usable model or refuses with InvalidSpec, never another exception.

The specs are generated from ``crds/*.yaml`` themselves. hypothesis-jsonschema 0.23 cannot
build objects with this Hypothesis release (it uses a removed internal), so objects, arrays
and ``oneOf`` branches are walked here and every leaf comes from
``hypothesis_jsonschema.from_schema``, mixed with edge values (overflowing durations, ports
out of range, extreme integers) whenever the leaf's own schema allows them. Each example is
finally checked against the whole schema with jsonschema, as the apiserver would.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from stronghold_operator.logic import backup as lb
from stronghold_operator.logic import scaling as sc
from stronghold_operator.logic import window as w
from stronghold_operator.logic.recurrence import from_spec
from stronghold_operator.models.backup import BackupScheduleSpec
from stronghold_operator.models.base import InvalidSpec, SpecModel, parse
from stronghold_operator.models.health import HealthPolicySpec
from stronghold_operator.models.maintenance import MaintenanceWindowSpec
from stronghold_operator.models.scaling import ScalingPolicySpec

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 6, 1, tzinfo=UTC)
M = TypeVar("M", bound=SpecModel)

# Values that broke (or could break) parsing; used wherever a leaf's schema admits them.
EDGE_STRINGS = [
    "99999999999h",
    "999999h",
    "999999h999999m999999s999999ms",
    "8761h",
    "8760h",
    "169h",
    "25h",
    "2h",
    "0s",
    "1ms",
    "999ms",
    "1s",
    "5s",
    "http://example.com:99999/",
    "http://example.com:0/",
    "https://example.com:65536/x",
    "http://[::1/",
    "http://127.0.0.1:8080/health",
    "tcp://127.0.0.1:99999",
    "tcp://127.0.0.1:2375",
    "cache:99999",
    "cache:0",
    "127.0.0.1:11211",
    "9999-12-31T23:59:00Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:00:00",
    "9999-12-31",
    "0001-01-01",
]
EDGE_NUMBERS = [0, 1, -1, 65535, 65536, 10**6, 2**31, 2**63 - 1, 10**30]


def _clean(node: Any) -> Any:
    """The CRD schema as plain JSON Schema (draft 2020-12) for jsonschema and from_schema."""
    if isinstance(node, dict):
        out = {
            k: _clean(v)
            for k, v in node.items()
            if not k.startswith("x-kubernetes") and k not in ("description", "nullable")
        }
        if out.get("exclusiveMinimum") is True:  # OpenAPI v3.0 style
            out["exclusiveMinimum"] = out.pop("minimum")
        if out.get("exclusiveMaximum") is True:
            out["exclusiveMaximum"] = out.pop("maximum")
        return out
    if isinstance(node, list):
        return [_clean(v) for v in node]
    return node


def _admits(node: dict[str, Any], value: Any) -> bool:
    return jsonschema.Draft202012Validator(_clean(node)).is_valid(value)


def _leaf(node: dict[str, Any]) -> st.SearchStrategy[Any]:
    base = from_schema(_clean({k: v for k, v in node.items() if k != "default"}))
    pool = EDGE_STRINGS if node.get("type") == "string" else EDGE_NUMBERS
    if node.get("type") in ("string", "integer", "number"):
        edges = [v for v in pool if _admits(node, v)]
        if edges:
            # One draw in four is an edge value, so ordinary values get explored too.
            return st.one_of(st.sampled_from(edges), base, base, base)
    return base


def _object(node: dict[str, Any], exclude: set[str]) -> st.SearchStrategy[dict[str, Any]]:
    props = node.get("properties") or {}
    required = set(node.get("required") or [])
    return st.fixed_dictionaries(
        {k: strategy(v) for k, v in props.items() if k in required},
        optional={
            k: strategy(v) for k, v in props.items() if k not in required and k not in exclude
        },
    )


def strategy(node: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values for one CRD schema node (structural schema: objects, arrays, leaves)."""
    kind = node.get("type")
    if kind == "object":
        if node.get("properties"):
            branches = node.get("oneOf")
            if not branches:
                return _object(node, set())
            # One strategy per branch; a key another branch needs alone is left out.
            alone = [set(b.get("required") or []) for b in branches]
            out = []
            for b in branches:
                merged = {
                    **node,
                    "properties": {**node["properties"], **(b.get("properties") or {})},
                    "required": sorted(
                        set(node.get("required") or []) | set(b.get("required") or [])
                    ),
                }
                own = set(b.get("required") or [])
                exclude = {k for r in alone if len(r) == 1 and r != own for k in r}
                out.append(_object(merged, exclude))
            return st.one_of(out)
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            return st.dictionaries(
                st.sampled_from(["a", "app", "x-y", "Metadata-Flavor"]), strategy(extra), max_size=2
            )
        return st.dictionaries(st.sampled_from(["a", "b"]), st.text(max_size=4), max_size=2)
    if kind == "array":
        lo = node.get("minItems", 0)
        return st.lists(
            strategy(node["items"]), min_size=lo, max_size=max(lo, min(2, node.get("maxItems", 2)))
        )
    return _leaf(node)


def _spec_schema(kind: str) -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "crds" / f"{kind}.yaml").read_text())
    spec: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
        "spec"
    ]
    return spec


KINDS: dict[type[SpecModel], str] = {
    ScalingPolicySpec: "scalingpolicy",
    HealthPolicySpec: "healthpolicy",
    BackupScheduleSpec: "backupschedule",
    MaintenanceWindowSpec: "maintenancewindow",
}
SCHEMAS = {kind: _spec_schema(kind) for kind in KINDS.values()}
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)


def fuzz(model: type[SpecModel]) -> Callable[[Callable[[dict[str, Any]], None]], Any]:
    """Run the test on specs generated from the CRD schema of `model`'s kind."""
    return lambda test: FUZZ(given(strategy(SCHEMAS[KINDS[model]]))(test))


def _parse_or_refuse(model: type[M], spec: dict[str, Any]) -> M | None:
    """The model, or None when the apiserver would refuse the spec or parse() refuses it."""
    if not jsonschema.Draft202012Validator(_clean(SCHEMAS[KINDS[model]])).is_valid(spec):
        return None  # the apiserver would refuse it; nothing for the operator to handle
    try:
        parsed = parse(model, spec)
    except InvalidSpec as exc:
        assert exc.message  # says why
        return None
    assert isinstance(parsed, model)
    return parsed


def _usable_url(url: str) -> None:
    parts = urlsplit(url)
    assert parts.hostname
    port = parts.port
    assert port is None or 1 <= port <= 65535


@fuzz(ScalingPolicySpec)
def test_scalingpolicy_specs(spec: dict[str, Any]) -> None:
    p = _parse_or_refuse(ScalingPolicySpec, spec)
    if p is None:
        return
    assert timedelta(seconds=1) <= p.interval <= timedelta(hours=1)
    if p.target_ref.is_compose:
        urlsplit(p.target_ref.docker_host).port  # noqa: B018 - must not raise
    samples = [sc.Sample(NOW - k * p.interval, 10.0, 10.0) for k in range(3, -1, -1)]
    kept = sc.trim(samples, p, NOW)
    d = sc.decide(p, kept, p.min_replicas, NOW, sc.ScalingState())
    assert d.reason in sc.REASONS
    assert NOW + sc.keep_window(p) + p.scale_down.sustained_for > NOW


@fuzz(HealthPolicySpec)
def test_healthpolicy_specs(spec: dict[str, Any]) -> None:
    p = _parse_or_refuse(HealthPolicySpec, spec)
    if p is None:
        return
    for c in p.checks:
        assert p.timeout_of(c) <= p.interval
        if c.http is not None:
            for u in c.http.targets:
                _usable_url(u)
        if c.memcached is not None:
            assert 1 <= c.memcached.port <= 65535
        if c.prometheus is not None:
            _usable_url(c.prometheus.url)
    if p.alerting.webhook is not None and p.alerting.webhook.url is not None:
        _usable_url(p.alerting.webhook.url)
    for step in p.alerting.escalation:
        assert NOW + step.after > NOW


@fuzz(BackupScheduleSpec)
def test_backupschedule_specs(spec: dict[str, Any]) -> None:
    p = _parse_or_refuse(BackupScheduleSpec, spec)
    if p is None:
        return
    try:
        lb.compile_schedules(p)  # as the handler does right after parse()
    except InvalidSpec:
        return
    deadline = p.deadline
    assert deadline is None or NOW + deadline > NOW
    assert NOW - p.stale_after <= NOW


@fuzz(MaintenanceWindowSpec)
def test_maintenancewindow_specs(spec: dict[str, Any]) -> None:
    p = _parse_or_refuse(MaintenanceWindowSpec, spec)
    if p is None:
        return
    for h in p.post_checks.http:
        _usable_url(h.url)
    try:
        rec = from_spec(p, NOW)
    except InvalidSpec:
        return
    d = w.decide(p, rec, NOW, None)
    assert {c.type for c in d.conditions} == set(w.CONDITION_TYPES)


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_the_generator_reaches_valid_specs(kind: str) -> None:
    """The strategies are not vacuous: some generated specs pass the CRD's schema."""
    validator = jsonschema.Draft202012Validator(_clean(SCHEMAS[kind]))
    found: list[dict[str, Any]] = []

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    @given(strategy(SCHEMAS[kind]))
    def collect(spec: dict[str, Any]) -> None:
        if validator.is_valid(spec):
            found.append(spec)

    collect()
    assert found
    assert all(re.match(r"^\{", repr(s)) for s in found)
