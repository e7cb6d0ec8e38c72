"""The BackupSchedule status model agrees with the CRD's status schema, and round-trips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from stronghold_operator.models.backup import (
    ActiveJob,
    BackupRecord,
    BackupScheduleStatus,
    LastRestoreTest,
    LastVerification,
    OnDemand,
)
from stronghold_operator.models.status import Condition

ROOT = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((ROOT / "crds/backupschedule.yaml").read_text())
STATUS = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]


def _aliases(model: type[BaseModel]) -> set[str]:
    return {f.alias or name for name, f in model.model_fields.items()}


def _props(schema: dict[str, Any]) -> set[str]:
    if schema.get("type") == "array":
        schema = schema["items"]
    return set(schema["properties"])


def test_status_model_and_crd_agree() -> None:
    props = STATUS["properties"]
    assert set(props) == _aliases(BackupScheduleStatus)
    for key, model in (
        ("conditions", Condition),
        ("active", ActiveJob),
        ("onDemand", OnDemand),
        ("lastVerification", LastVerification),
        ("lastRestoreTest", LastRestoreTest),
        ("backups", BackupRecord),
    ):
        assert _props(props[key]) == _aliases(model), key


def test_a_written_status_reads_back_unchanged() -> None:
    status = yaml.safe_load((ROOT / "tests/unit/golden/backupschedule-status.yaml").read_text())
    written = BackupScheduleStatus.model_validate(status).to_status()
    assert written == status
    assert isinstance(written["backups"][0]["durationSeconds"], int)
    assert isinstance(written["lastRestoreTest"]["durationSeconds"], float)
