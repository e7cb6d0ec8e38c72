"""Conditions: upsert keeps lastTransitionTime when status is unchanged; deltas skip no-ops."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from stronghold_operator import conditions as c

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def test_first_write_sets_transition_time_and_generation() -> None:
    out = c.upsert(None, [c.Condition("Ready", "True", "Reconciled", "ok")], 3, T0)
    assert out == [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Reconciled",
            "message": "ok",
            "lastTransitionTime": "2026-01-01T12:00:00Z",
            "observedGeneration": 3,
        }
    ]


def test_same_status_keeps_transition_time_but_updates_reason_and_message() -> None:
    first = c.upsert(None, [c.Condition("Ready", "True", "A", "one")], 1, T0)
    second = c.upsert(first, [c.Condition("Ready", "True", "B", "two")], 2, T1)
    assert second[0]["lastTransitionTime"] == "2026-01-01T12:00:00Z"
    assert (second[0]["reason"], second[0]["message"], second[0]["observedGeneration"]) == (
        "B",
        "two",
        2,
    )


def test_status_change_moves_transition_time() -> None:
    first = c.upsert(None, [c.Condition("Ready", "True", "A")], 1, T0)
    second = c.upsert(first, [c.Condition("Ready", "False", "B")], 1, T1)
    assert second[0]["lastTransitionTime"] == "2026-01-01T12:05:00Z"


def test_order_is_kept_and_new_types_are_appended() -> None:
    first = c.upsert(None, c.unknown_all(["Ready", "Healthy"]), 1, T0)
    second = c.upsert(
        first, [c.Condition("Degraded", "False", "X"), c.Condition("Ready", "True", "Y")], 1, T1
    )
    assert [x["type"] for x in second] == ["Ready", "Healthy", "Degraded"]
    assert all(x["status"] == "Unknown" for x in first)


def test_transitions_report_status_and_reason_changes_only() -> None:
    before = c.upsert(
        None, [c.Condition("Ready", "True", "A"), c.Condition("Healthy", "True", "H")], 1, T0
    )
    after = c.upsert(
        before,
        [c.Condition("Ready", "True", "A", "new message"), c.Condition("Healthy", "False", "Down")],
        1,
        T1,
    )
    moved = c.transitions(before, after)
    assert [(t.type, t.old, t.new, t.reason) for t in moved] == [
        ("Healthy", "True", "False", "Down")
    ]


def test_status_delta_ignores_timestamps_and_unchanged_fields() -> None:
    current = {
        "observedGeneration": 2,
        "conditions": c.upsert(None, [c.Condition("Ready", "True", "A")], 2, T0),
    }
    desired = {
        "observedGeneration": 2,
        "conditions": c.upsert(None, [c.Condition("Ready", "True", "A")], 2, T1),
    }
    assert c.status_delta(current, desired) == {}
    desired["extra"] = 1
    assert c.status_delta(current, desired) == {"extra": 1}


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Ready", "Healthy", "Degraded"]),
            st.sampled_from(["True", "False", "Unknown"]),
        ),
        max_size=20,
    )
)
def test_upsert_keeps_one_entry_per_type(seq: list[tuple[str, c.ConditionStatus]]) -> None:
    conds: list[dict[str, object]] = []
    for i, (type_, status) in enumerate(seq):
        conds = c.upsert(conds, [c.Condition(type_, status, "R")], 1, T0 + timedelta(seconds=i))
    types = [x["type"] for x in conds]
    assert len(types) == len(set(types))
    for type_, status in seq[::-1]:
        entry = next(x for x in conds if x["type"] == type_)
        assert entry["status"] == status
        break


def test_empty_strings_never_reach_the_patch() -> None:
    desired = {
        "conditions": c.upsert(None, [c.Condition("Ready", "True", "A", "")], 1, T0),
        "note": "",
    }
    delta = c.status_delta({}, desired)
    assert "message" not in delta["conditions"][0]
    assert "note" not in delta


def test_vanished_nested_keys_are_deleted_and_emptied_top_level_keys_nulled() -> None:
    current = {"lastDecision": {"action": "Hold", "message": "old"}, "note": "x", "other": 1}
    desired = {"lastDecision": {"action": "Hold", "message": ""}, "note": ""}
    assert c.status_delta(current, desired) == {"lastDecision": {"message": None}, "note": None}


def test_unchanged_nested_objects_produce_no_patch() -> None:
    current = {"lastDecision": {"action": "Hold", "from": 2}}
    assert c.status_delta(current, {"lastDecision": {"action": "Hold", "from": 2}}) == {}


def test_parse_rfc3339_reads_back_what_status_holds() -> None:
    t = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert c.parse_rfc3339(c.rfc3339(t)) == t
    assert c.parse_rfc3339("2026-03-29T03:30:00+02:00") == t
    assert c.parse_rfc3339("2026-03-29T01:30:00") == t  # naive: the API means UTC
    assert c.parse_rfc3339(t.astimezone(timezone(timedelta(hours=5)))) == t
    for bad in (None, "", "yesterday", 17, {"t": 1}):
        assert c.parse_rfc3339(bad) is None
