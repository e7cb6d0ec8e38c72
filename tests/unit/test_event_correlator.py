"""logic/events: client-go's EventCorrelator semantics (aggregation, spam filter, cap)."""

from __future__ import annotations

from stronghold_operator.logic.events import Correlator, Limits

WIDE = Limits(qps=1000, burst=1000)  # no operator-wide cap in the way


def test_similar_events_past_max_similar_become_one_summary() -> None:
    c = Correlator(Limits(max_similar=3, window=60, qps=1000, burst=1000), now=0)
    verdicts = [c.admit("a", "Warning", "Down", f"try {i}", now=i, ref="obj-a") for i in range(7)]
    assert verdicts == ["post"] * 3 + ["aggregated"] * 4
    assert c.admit("a", "Warning", "Up", "x", now=7) == "post"  # another reason: not similar
    assert c.admit("b", "Warning", "Down", "x", now=7) == "post"  # another object
    assert c.flush(now=30) == []  # the window has not ended
    [summary] = c.flush(now=60)
    assert (summary.key, summary.count, summary.message, summary.ref) == (
        ("a", "Warning", "Down"),
        4,
        "try 6",
        "obj-a",
    )
    assert c.admit("a", "Warning", "Down", "again", now=61) == "post"  # a new window


def test_a_new_window_keeps_the_ended_ones_summary_for_flush() -> None:
    c = Correlator(Limits(max_similar=1, window=10, qps=1000, burst=1000), now=0)
    assert c.admit("a", "Warning", "Down", "1", now=0) == "post"
    assert c.admit("a", "Warning", "Down", "2", now=1) == "aggregated"
    assert c.admit("a", "Warning", "Down", "3", now=11) == "post"  # window ended
    [summary] = c.flush(now=12)
    assert summary.count == 1 and summary.message == "2"


def test_the_spam_filter_is_per_object() -> None:
    c = Correlator(Limits(object_burst=2, object_qps=1 / 300, **_wide()), now=0)
    reasons = ["A", "B", "C"]
    assert [c.admit("a", "Normal", r, "", now=0) for r in reasons] == ["post", "post", "spam"]
    assert c.admit("b", "Normal", "A", "", now=0) == "post"
    assert c.admit("a", "Normal", "D", "", now=300) == "post"  # one token back per 5 min


def test_the_operator_wide_cap_bounds_a_storm() -> None:
    c = Correlator(Limits(qps=1, burst=5), now=0)
    verdicts = [c.admit(f"obj{i}", "Warning", "Down", "", now=0) for i in range(1000)]
    assert verdicts.count("post") == 5 and verdicts.count("cap") == 995
    assert c.admit("late", "Warning", "Down", "", now=1) == "post"


def test_flush_forgets_idle_state_and_forget_drops_an_object() -> None:
    c = Correlator(Limits(window=10, object_qps=1, object_burst=2, **_wide()), now=0)
    c.admit("a", "Normal", "A", "", now=0)
    c.admit("b", "Normal", "A", "", now=0)
    assert len(c) == 4  # two windows, two buckets
    c.forget("b")
    assert len(c) == 2
    c.flush(now=20)  # the window ended and the bucket is full again
    assert len(c) == 0


def _wide() -> dict[str, float]:
    return {"qps": WIDE.qps, "burst": WIDE.burst}
