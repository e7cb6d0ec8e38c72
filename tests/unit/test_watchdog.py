"""Stalled-watch detection: only a change the watch never delivered, past the grace, is stale."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import kopf
import pytest

import stronghold_operator.main  # noqa: F401 - the handlers register the kinds the LIST reads
from stronghold_operator import settings
from stronghold_operator.controllers.common import Services
from stronghold_operator.logic.watchdog import WatchTracker, liveness_failure, versions
from stronghold_operator.models.errors import ApiError, ApiUnreachable

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


def test_an_unreachable_apiserver_restarts_the_lag_clocks() -> None:
    # A change listed just before an apiserver freeze could not be delivered during it:
    # the lag counts again from the first answer after it, not from before the freeze.
    w = WatchTracker(grace=timedelta(seconds=60))
    w.observe("a", "1")
    assert w.stale({"a": "2"}, T0) == []
    w.unreachable()  # the LISTs of the next two minutes fail
    assert w.stale({"a": "2"}, T0 + timedelta(seconds=130)) == []
    assert w.stale({"a": "2"}, T0 + timedelta(seconds=189)) == []
    assert w.stale({"a": "2"}, T0 + timedelta(seconds=191)) == ["a"]  # really stuck now


def test_liveness_fails_only_for_undelivered_changes_seen_in_an_answer() -> None:
    assert liveness_failure(None, []) is None  # apiserver down, slow or erroring
    assert liveness_failure(None, ["a"]) is None
    assert liveness_failure({"a": "2"}, []) is None
    failure = liveness_failure({"a": "2"}, ["a"])
    assert failure is not None and "1 object change" in failure


class _Kube:
    def __init__(self, fail: BaseException | None) -> None:
        self.fail = fail
        self.calls = 0

    async def list_metadata(self, *_: object, **__: object) -> list[dict[str, object]]:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        await asyncio.sleep(3600)  # a frozen apiserver: the connection never answers
        raise AssertionError("unreachable")


@pytest.mark.parametrize(
    "fail",
    [
        None,  # hangs
        ApiUnreachable("ConnectError: connection refused"),
        ApiError(503, "Service Unavailable"),
        ApiError(429, "Too Many Requests"),
        TimeoutError(),
    ],
)
async def test_liveness_passes_while_the_apiserver_does_not_answer(
    fail: BaseException | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "LIST_TIMEOUT_S", 0.05)
    svc = Services(kube=_Kube(fail), watch=WatchTracker(grace=timedelta(seconds=10)))  # type: ignore[arg-type]
    svc.watch.lagging_since["a"] = T0  # lagging since long before: the clock restarts
    memo = kopf.Memo()
    memo["services"] = svc
    started = time.monotonic()
    result = await settings.watch_alive(memo=memo)
    assert time.monotonic() - started < 1.0  # well within the kubelet's probe timeout
    assert str(result["apiserver"]).startswith("unreachable")
    assert svc.watch.lagging_since == {}


async def test_liveness_fails_for_a_stalled_watch() -> None:
    class Answering:
        async def list_metadata(self, *_: object, **__: object) -> list[dict[str, object]]:
            return [{"metadata": {"uid": "a", "resourceVersion": "2"}}]

    svc = Services(kube=Answering(), watch=WatchTracker(grace=timedelta(seconds=10)))  # type: ignore[arg-type]
    svc.seen("a", "1")  # what the watch delivered; the apiserver has "2"
    memo = kopf.Memo()
    memo["services"] = svc
    assert await settings.watch_alive(memo=memo) == {"objects": 1}  # lagging from now
    svc.watch.lagging_since["a"] -= timedelta(seconds=60)  # a minute later, still "1"
    with pytest.raises(kopf.PermanentError, match="watch stalled"):
        await settings.watch_alive(memo=memo)
