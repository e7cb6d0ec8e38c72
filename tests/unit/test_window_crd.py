"""The MaintenanceWindow CRD, the spec model and the examples agree with each other."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import BaseModel

from stronghold_operator.logic.recurrence import from_spec
from stronghold_operator.models.base import parse
from stronghold_operator.models.maintenance import MaintenanceWindowSpec, MaintenanceWindowStatus

ROOT = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((ROOT / "crds" / "maintenancewindow.yaml").read_text())
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]
EXAMPLES = sorted((ROOT / "examples").glob("maintenancewindow-*.yaml"))


def walk(node: dict[str, Any], path: str = "") -> list[str]:
    """Paths of properties without a description."""
    missing = []
    for name, sub in (node.get("properties") or {}).items():
        here = f"{path}.{name}"
        if name != "metadata" and not sub.get("description"):
            missing.append(here)
        missing += walk(sub, here)
    if isinstance(node.get("items"), dict):
        missing += walk(node["items"], path + "[]")
    return missing


def test_every_field_has_a_description() -> None:
    assert walk(SCHEMA) == []


def test_names_columns_and_subresource() -> None:
    assert CRD["spec"]["names"]["shortNames"] == ["mw"]
    assert "stronghold" in CRD["spec"]["names"]["categories"]
    assert VERSION["subresources"] == {"status": {}}
    columns = [c["name"] for c in VERSION["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Ready", "Active", "Next Start", "Last Result", "Age"]
    assert "phase" not in SCHEMA["properties"]["status"]["properties"]


def model_fields(model: type[BaseModel]) -> set[str]:
    return {f.alias or name for name, f in model.model_fields.items()}


@pytest.mark.parametrize(
    ("path", "model_path"),
    [
        ((), ()),
        (("schedule",), ("schedule",)),
        (("preChecks",), ("pre_checks",)),
        (("preChecks", "backup"), ("pre_checks", "backup")),
        (("postChecks",), ("post_checks",)),
        (("targets",), ("targets",)),
    ],
)
def test_crd_spec_and_model_have_the_same_fields(
    path: tuple[str, ...], model_path: tuple[str, ...]
) -> None:
    node = SCHEMA["properties"]["spec"]
    for p in path:
        node = node["properties"][p]
    model: Any = MaintenanceWindowSpec
    for m in model_path:
        ann = model.model_fields[m].annotation
        model = next(a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type))
    assert set(node["properties"]) == model_fields(model)


def _jsonschema(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _jsonschema(v) for k, v in node.items() if not k.startswith("x-kubernetes")}
    if isinstance(node, list):
        return [_jsonschema(v) for v in node]
    return node


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_pass_the_crd_schema_and_the_model(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    assert doc["kind"] == "MaintenanceWindow"
    jsonschema.validate(doc["spec"], _jsonschema(SCHEMA["properties"]["spec"]))
    spec = parse(MaintenanceWindowSpec, doc["spec"])
    rec = from_spec(spec, datetime(2026, 11, 1, tzinfo=UTC))
    assert rec.next_after(datetime(2026, 11, 1, tzinfo=UTC)) is not None


def test_the_guide_window_skips_the_year_end_and_handles_dst() -> None:
    doc = yaml.safe_load((ROOT / "examples" / "maintenancewindow-weekly.yaml").read_text())
    rec = from_spec(parse(MaintenanceWindowSpec, doc["spec"]), datetime(2026, 1, 1, tzinfo=UTC))
    starts = [o.start for o in rec.upcoming(datetime(2026, 12, 14, tzinfo=UTC), 2)]
    assert starts == [datetime(2027, 1, 10, 1, tzinfo=UTC), datetime(2027, 1, 17, 1, tzinfo=UTC)]


@pytest.mark.parametrize(
    "spec",
    [
        {"schedule": {"cron": "0 2 * * 0"}},  # no duration
        {"schedule": {"cron": "0 2 * * 0", "rrule": "FREQ=DAILY", "duration": "1h"}},
        {"schedule": {"start": "tomorrow"}},
        {"schedule": {"cron": "0 2 * * 0", "duration": "2 hours"}},
        {"schedule": {"cron": "0 2 * * 0", "duration": "2h"}, "onPreCheckFailure": "Maybe"},
        {"schedule": {"cron": "0 2 * * 0", "duration": "2h"}, "exclusions": [{"reason": "x"}]},
        {"schedule": {"cron": "0 2 * * 0", "duration": "2h"}, "historyLimit": 0},
    ],
)
def test_the_apiserver_schema_refuses_bad_specs(spec: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(spec, _jsonschema(SCHEMA["properties"]["spec"]))


def _fields(model: type[BaseModel]) -> set[str]:
    return {f.alias or name for name, f in model.model_fields.items()}


def _agree(schema: dict[str, Any], model: type[BaseModel], path: str) -> list[str]:
    """The schema's properties are the model's fields (both ways), nested objects too;
    returns the paths compared."""
    seen = [path]
    assert set(schema["properties"]) == _fields(model), path
    for name, f in model.model_fields.items():
        sub = schema["properties"][f.alias or name]
        sub = sub.get("items", sub) if sub.get("type") == "array" else sub
        nested = [a for a in getattr(f.annotation, "__args__", (f.annotation,))]
        nested += [b for a in nested for b in getattr(a, "__args__", ())]
        for kind in nested:
            if isinstance(kind, type) and issubclass(kind, BaseModel) and "properties" in sub:
                seen += _agree(sub, kind, f"{path}.{f.alias or name}")
    return seen


def test_status_model_and_crd_agree() -> None:
    schema = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    compared = _agree(schema, MaintenanceWindowStatus, "status")
    assert "status.currentWindow.preChecks" in compared and "status.checks" in compared


def test_status_serialises_without_nested_nulls() -> None:
    status = MaintenanceWindowStatus.model_validate(
        {"currentWindow": {"id": "x", "skipped": None, "endReason": ""}, "lastResult": None}
    ).to_status()
    # Top-level None deletes the field; nested None and "" are left out.
    assert status == {"currentWindow": {"id": "x"}, "lastResult": None}
