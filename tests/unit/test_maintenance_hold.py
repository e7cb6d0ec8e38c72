"""A freeze ends with its window, even one deleted with its finalizer stripped (issue 17, 11b).

What holds an object is judged level-triggered from the windows that exist now (kopf's
index), not from a release that a force-delete skips.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from stronghold_operator.controllers.common import Services, maintenance_hold
from stronghold_operator.logic.watchdog import WatchTracker
from stronghold_operator.models.common import MAINTENANCE_ANNOTATION, MAINTENANCE_WINDOWS_ANNOTATION
from stronghold_operator.models.maintenance import holding, with_holder, without_holder


@pytest.mark.parametrize(
    ("value", "placed", "windows", "held"),
    [
        (None, None, set(), None),
        ("w1", "w1", {"w1"}, "w1"),  # the window exists: it holds
        ("w1", "w1", set(), None),  # force-deleted: its freeze ends
        ("w1", "w1", {"w2"}, None),
        ("manual-hold", None, set(), "manual-hold"),  # a human's hold stays until removed
        ("manual-hold,w1", "w1", set(), "manual-hold"),
        ("w1,w2", "w1,w2", {"w2"}, "w2"),  # overlapping windows: only the gone one lets go
        ("w1", None, set(), "w1"),  # placed before windows listed theirs: the word stands
    ],
)
def test_holding(
    value: str | None, placed: str | None, windows: set[str], held: str | None
) -> None:
    assert holding(value, placed, windows) == held


def test_a_window_lists_what_it_placed_and_removes_it_on_release() -> None:
    value = placed = None
    value, placed = with_holder(value, "w1"), with_holder(placed, "w1")
    value = with_holder(value, "manual-hold")  # a human adds a hold meanwhile
    assert holding(value, placed, {"w1"}) == "manual-hold,w1"
    value, placed = without_holder(value, "w1"), without_holder(placed, "w1")
    assert (value, placed) == ("manual-hold", None)


def _meta(ns: str, value: str | None, placed: str | None) -> dict[str, Any]:
    annotations = {}
    if value is not None:
        annotations[MAINTENANCE_ANNOTATION] = value
    if placed is not None:
        annotations[MAINTENANCE_WINDOWS_ANNOTATION] = placed
    return {"namespace": ns, "name": "p", "annotations": annotations}


def test_maintenance_hold_reads_the_current_windows_of_the_namespace() -> None:
    svc = Services(kube=None, watch=WatchTracker(grace=timedelta(seconds=1)))  # type: ignore[arg-type]
    meta = _meta("a", "w1", "w1")
    assert maintenance_hold(svc, meta) == "w1"  # no index given yet: the annotation's word
    index: dict[str, list[str]] = {"a": ["w1"], "b": ["w9"]}  # kopf's index: ns -> names
    svc.remember_windows({"maintenance_windows": index, "other": 1})
    assert maintenance_hold(svc, meta) == "w1"
    index["a"].remove("w1")  # kopf keeps the index current: the window is gone
    assert maintenance_hold(svc, meta) is None
    del index["a"]  # the namespace has no window at all
    assert maintenance_hold(svc, meta) is None
    assert maintenance_hold(svc, _meta("b", "w1", "w1")) is None  # w1 is not b's window
    assert maintenance_hold(svc, _meta("a", "manual-hold", None)) == "manual-hold"
    assert maintenance_hold(svc, _meta("a", None, None)) is None
