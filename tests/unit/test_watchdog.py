"""Stalled-watch detection: only a change the watch never delivered, past the grace, is stale."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import kopf

from stronghold_operator.handlers.common import Services
from stronghold_operator.logic.watchdog import WatchTracker, versions

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_delivered_versions_are_never_stale() -> None:
    w = WatchTracker(grace=timedelta(seconds=60))
    w.observe("a", "1")
    assert w.stale({"a": "1"}, T0) == []
    assert w.stale({"a": "1"}, T0 + timedelta(hours=1)) == []


def test_undelivered_change_is_stale_only_after_grace() -> None:
    w = WatchTracker(grace=timedelta(seconds=60))
    w.observe("a", "1")
    assert w.stale({"a": "2"}, T0) == []
    assert w.stale({"a": "2"}, T0 + timedelta(seconds=59)) == []
    assert w.stale({"a": "2"}, T0 + timedelta(seconds=61)) == ["a"]
    w.observe("a", "2")  # the watch caught up
    assert w.stale({"a": "2"}, T0 + timedelta(seconds=62)) == []


def test_new_and_deleted_objects() -> None:
    w = WatchTracker(grace=timedelta(seconds=10))
    assert w.stale({"b": "5"}, T0) == []  # never seen: lagging from now
    assert w.stale({}, T0 + timedelta(seconds=5)) == []  # deleted before grace: forgotten
    assert w.stale({"b": "5"}, T0 + timedelta(seconds=20)) == []  # lag restarts
    w.forget("b")
    assert w.seen == {}


def test_live_bodies_feed_the_tracker_and_unlisted_objects_are_dropped() -> None:
    # The daemons' live bodies: kopf replaces their content with every watch event.
    raw_a = {"metadata": {"uid": "a", "resourceVersion": "1"}}
    svc = Services(kube=None, watch=WatchTracker(grace=timedelta(seconds=10)))  # type: ignore[arg-type]
    svc.follow(kopf.Body(raw_a))
    svc.follow(kopf.Body({"metadata": {"uid": "gone", "resourceVersion": "7"}}))
    svc.delivered({"a": "2"})
    assert set(svc.live) == {"a"}  # deleted: no longer followed
    assert svc.watch.stale({"a": "2"}, T0) == []
    assert svc.watch.stale({"a": "2"}, T0 + timedelta(seconds=11)) == ["a"]  # never delivered
    raw_a["metadata"]["resourceVersion"] = "2"  # the watch delivers it
    svc.delivered({"a": "2"})
    assert svc.watch.stale({"a": "2"}, T0 + timedelta(seconds=12)) == []
    svc.unfollow("a")
    assert svc.live == {} and svc.watch.seen == {}


def test_versions_reported_by_an_event_handler_feed_the_tracker() -> None:
    # HealthPolicy's watch-event handler reports versions instead of keeping a body.
    svc = Services(kube=None, watch=WatchTracker(grace=timedelta(seconds=10)))  # type: ignore[arg-type]
    svc.seen("a", "1")
    svc.seen("gone", "7")
    svc.delivered({"a": "2"})
    assert set(svc.versions) == {"a"}
    assert svc.watch.stale({"a": "2"}, T0) == []
    assert svc.watch.stale({"a": "2"}, T0 + timedelta(seconds=11)) == ["a"]
    svc.seen("a", "2")
    svc.delivered({"a": "2"})
    assert svc.watch.stale({"a": "2"}, T0 + timedelta(seconds=12)) == []
    svc.unfollow("a")
    assert svc.versions == {} and svc.watch.seen == {}


def test_objects_being_deleted_are_not_checked() -> None:
    # Once kopf stops serving an object nothing of ours follows it; another controller's
    # finalizer may keep it listed for ever, which must not fail the liveness probe.
    items = [
        {"metadata": {"uid": "a", "resourceVersion": "3"}},
        {
            "metadata": {
                "uid": "b",
                "resourceVersion": "9",
                "deletionTimestamp": "2026-01-01T00:00:00Z",
                "finalizers": ["example.com/other"],
            }
        },
    ]
    listed = versions(items)
    assert listed == {"a": "3"}
    w = WatchTracker(grace=timedelta(seconds=10))
    w.observe("a", "3")
    assert w.stale(listed, T0 + timedelta(hours=1)) == []
