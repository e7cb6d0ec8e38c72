"""The schedule that runs every HealthPolicy's rounds."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stronghold_operator.logic.schedule import Schedule


def test_pops_in_time_order_only_what_is_due() -> None:
    s = Schedule()
    s.at("b", 2.0)
    s.at("a", 1.0)
    s.at("c", 3.0)
    assert s.next_at() == 1.0
    assert s.pop_due(2.5) == [("a", 1.0), ("b", 2.0)]
    assert len(s) == 1 and "c" in s and "a" not in s
    assert s.pop_due(2.9) == []
    assert s.next_at() == 3.0


def test_setting_a_key_again_replaces_its_plan() -> None:
    s = Schedule()
    s.at("a", 5.0)
    s.at("a", 1.0)
    assert s.pop_due(10.0) == [("a", 1.0)]
    assert s.next_at() is None
    s.at("a", 1.0)
    s.at("a", 7.0)  # later: the earlier entry is stale
    assert s.pop_due(5.0) == []
    assert s.due("a") == 7.0


def test_sooner_never_postpones() -> None:
    s = Schedule()
    s.at("a", 5.0)
    s.sooner("a", 9.0)
    assert s.due("a") == 5.0
    s.sooner("a", 2.0)
    assert s.due("a") == 2.0
    s.sooner("new", 3.0)
    assert s.pop_due(10.0) == [("a", 2.0), ("new", 3.0)]


def test_dropped_key_never_comes_due() -> None:
    s = Schedule()
    s.at("a", 1.0)
    s.at("b", 2.0)
    s.drop("a")
    s.drop("missing")
    assert s.next_at() == 2.0
    assert s.pop_due(10.0) == [("b", 2.0)]


def test_heap_stays_bounded_under_constant_rescheduling() -> None:
    s = Schedule()
    for i in range(10_000):
        s.at(f"k{i % 10}", float(i))
    assert len(s) == 10
    assert len(s._heap) <= 2 * 10 + 65


@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.floats(0, 100), st.booleans())))
def test_matches_a_plain_dict(ops: list[tuple[str, float, bool]]) -> None:
    s = Schedule()
    model: dict[str, float] = {}
    for key, when, drop in ops:
        if drop:
            s.drop(key)
            model.pop(key, None)
        else:
            s.at(key, when)
            model[key] = when
    assert s.next_at() == (min(model.values()) if model else None)
    popped = s.pop_due(50.0)
    assert sorted(popped) == sorted((k, w) for k, w in model.items() if w <= 50.0)
    assert [w for _, w in popped] == sorted(w for _, w in popped)
    assert len(s) == sum(1 for w in model.values() if w > 50.0)
