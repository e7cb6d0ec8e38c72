"""``stronghold status`` on whatever the CRDs admit: every object the apiserver would store
(spec and status generated from crds/*.yaml) becomes a row, never an exception, and the
report validates against the committed schema."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import jsonschema
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stronghold_operator.logic import status as logic
from tests.unit.test_spec_fuzz import ROOT, strategy
from tests.unit.test_status_report import schema

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
FILES = {
    "HealthPolicy": "healthpolicy",
    "BackupSchedule": "backupschedule",
    "ScalingPolicy": "scalingpolicy",
    "MaintenanceWindow": "maintenancewindow",
}


def _schema(kind: str) -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "crds" / f"{FILES[kind]}.yaml").read_text())
    node: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return node


def objects(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    props = _schema(kind)["properties"]
    meta = st.fixed_dictionaries(
        {"name": st.just("x"), "namespace": st.sampled_from(["a", "b"])},
        optional={
            "generation": st.integers(1, 3),
            "creationTimestamp": st.sampled_from(["2026-12-01T00:00:00Z", "2026-12-06T11:59:00Z"]),
            "deletionTimestamp": st.just("2026-12-06T11:00:00Z"),
        },
    )
    return st.fixed_dictionaries(
        {"kind": st.just(kind), "metadata": meta, "spec": strategy(props["spec"])},
        optional={"status": strategy(props["status"])},
    )


VALIDATOR = jsonschema.Draft202012Validator(schema())


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    st.fixed_dictionaries({k: st.lists(objects(k), max_size=2) for k in FILES}),
)
def test_any_stored_object_makes_a_valid_report(objs: dict[str, list[dict[str, Any]]]) -> None:
    report = logic.report(objs, NOW, scope={"allNamespaces": True})
    doc = report.to_json()
    VALIDATOR.validate(doc)
    assert report.objects == sum(len(v) for v in objs.values())
    levels = [logic.LEVELS.index(n.level) for n in report.namespaces]
    assert levels == sorted(levels)
    for ns in report.namespaces:
        for row in ns.rows:
            assert row.problem == bool(row.problems)  # a problem always says why
            assert len(row.cells) == len(logic.COLUMNS[row.kind])
