"""Fuzzing: anything the apiserver's schema accepts is either a usable window or InvalidSpec.

Specs are generated field by field (hypothesis-jsonschema 0.23 does not work with this
Hypothesis release) and filtered through the CRD's own schema, so the operator is shown to
never crash on an object the apiserver let through.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stronghold_operator.logic import window as w
from stronghold_operator.logic.recurrence import from_spec
from stronghold_operator.models.base import InvalidSpec, parse
from stronghold_operator.models.maintenance import MaintenanceWindowSpec

ROOT = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((ROOT / "crds" / "maintenancewindow.yaml").read_text())
SPEC_SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def _schema(node: Any) -> Any:
    """The CRD schema as plain JSON Schema."""
    if isinstance(node, dict):
        out = {k: _schema(v) for k, v in node.items() if not k.startswith("x-kubernetes")}
        out.pop("description", None)
        return out
    if isinstance(node, list):
        return [_schema(v) for v in node]
    return node


SCHEMA = _schema(SPEC_SCHEMA)
CRONS = ["0 2 * * 0", "*/15 * * * *", "0 0 31 2 *", "@daily", "61 * * * *", "30 2 * * *", "x"]
RRULES = [
    "FREQ=WEEKLY;BYDAY=SU;BYHOUR=2",
    "FREQ=DAILY;COUNT=3",
    "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30",
    "FREQ=MINUTELY",
    "FREQ=WEEKLY;UNTIL=20200101T000000",
    "DTSTART:20260101T020000\nRRULE:FREQ=MONTHLY;BYDAY=1SU",
    "FREQ=HOURLY;INTERVAL=5",
    "garbage",
]
DURATIONS = ["0s", "30s", "1m", "45m", "2h", "25h", "800h", "1h30m", "100ms"]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Nope/X"]
dates = st.dates(min_value=date(2025, 1, 1), max_value=date(2028, 12, 31)).map(str)
instants = st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31)).map(
    lambda d: d.replace(microsecond=0).isoformat()
)
schedules = st.one_of(
    st.fixed_dictionaries({"cron": st.sampled_from(CRONS), "duration": st.sampled_from(DURATIONS)}),
    st.fixed_dictionaries(
        {"rrule": st.sampled_from(RRULES), "duration": st.sampled_from(DURATIONS)}
    ),
    st.fixed_dictionaries({"start": instants}, optional={"end": instants}),
    st.fixed_dictionaries({"start": instants, "duration": st.sampled_from(DURATIONS)}),
)
exclusions = st.lists(
    st.one_of(
        st.fixed_dictionaries({"date": dates}),
        st.fixed_dictionaries({"start": dates, "end": dates}),
    ),
    max_size=3,
)
specs = st.fixed_dictionaries(
    {"schedule": schedules},
    optional={
        "timeZone": st.sampled_from(ZONES),
        "exclusions": exclusions,
        "suspend": st.booleans(),
        "onPreCheckFailure": st.sampled_from(["Skip", "Proceed"]),
        "preChecks": st.fixed_dictionaries(
            {},
            optional={
                "leadTime": st.sampled_from(DURATIONS),
                "snapshot": st.booleans(),
                "backup": st.fixed_dictionaries({"backupSchedule": st.just("db")}),
            },
        ),
        "historyLimit": st.integers(1, 50),
    },
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(specs, st.integers(0, 3 * 365 * 24))
def test_schema_valid_specs_parse_or_are_invalid_spec(spec: dict[str, Any], hours: int) -> None:
    try:
        jsonschema.validate(spec, SCHEMA)
    except jsonschema.ValidationError:
        return  # the apiserver would refuse it; nothing for the operator to handle
    try:
        model = parse(MaintenanceWindowSpec, spec)
        rec = from_spec(model, NOW)
    except InvalidSpec as exc:
        assert exc.message  # says why
        return
    now = NOW + timedelta(hours=hours)
    d = w.decide(model, rec, now, None)
    assert {c.type for c in d.conditions} == set(w.CONDITION_TYPES)
    assert all(c.message for c in d.conditions)
    if d.next_window is not None:
        assert d.next_window.start > now or d.progress is not None
