"""The HealthPolicy daemon's local status follows the API server's merge-patch semantics."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from stronghold_operator import conditions as cond
from stronghold_operator.conditions import merge_patch


def test_nested_delta_keeps_untouched_fields() -> None:
    # A severity change: the delta names only what changed inside the incident.
    written = {
        "severity": "P2",
        "incident": {"id": "inc-1", "severity": "P2", "maxSeverity": "P2", "summary": "db"},
    }
    desired = {
        "severity": "P1",
        "incident": {"id": "inc-1", "severity": "P1", "maxSeverity": "P1", "summary": "db"},
    }
    delta = cond.status_delta(written, desired)
    assert delta["incident"] == {"severity": "P1", "maxSeverity": "P1"}
    assert merge_patch(written, delta) == desired


def test_null_deletes_at_every_level() -> None:
    base = {"a": 1, "incident": {"id": "x", "maintenanceWindow": "w"}}
    assert merge_patch(base, {"a": None, "incident": {"maintenanceWindow": None}}) == {
        "incident": {"id": "x"}
    }


# No empty strings: status_delta drops them on purpose (1.20 reads "" as null).
_leaf = st.one_of(st.integers(), st.text(min_size=1, max_size=3), st.booleans())
_obj = st.recursive(
    st.dictionaries(st.sampled_from("abcd"), _leaf, max_size=4),
    lambda inner: st.dictionaries(st.sampled_from("abcd"), st.one_of(_leaf, inner), max_size=4),
    max_leaves=12,
)


@given(_obj, _obj)
def test_status_delta_then_merge_reaches_desired(
    before: dict[str, Any], after: dict[str, Any]
) -> None:
    # What the daemon keeps locally equals what the API server would hold after the patch,
    # for the top-level fields the desired status names.
    merged = merge_patch(before, cond.status_delta(before, after))
    for key, value in after.items():
        assert merged.get(key) == value
