"""Leader election's rules (logic/leader.py) and the fence (platforms/fence.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from stronghold_operator.logic.leader import LeaseRecord, Move, decide, format_micro
from stronghold_operator.platforms import fence

NOW = datetime(2026, 12, 6, 4, 30, tzinfo=UTC)


def held(by: str, transitions: int = 3, renewed: datetime = NOW) -> LeaseRecord:
    return LeaseRecord(by, 15, NOW - timedelta(hours=1), renewed, transitions)


def test_no_lease_is_acquired_with_zero_transitions() -> None:
    d = decide(None, "a", NOW, 0.0, 15)
    assert d.move is Move.ACQUIRE and d.holder == "a"
    assert d.record == LeaseRecord("a", 15, NOW, NOW, 0)


def test_the_holder_renews_keeping_acquire_time_and_transitions() -> None:
    d = decide(held("a"), "a", NOW + timedelta(seconds=2), 2.0, 15)
    assert d.move is Move.RENEW
    assert d.record is not None
    assert d.record.renew_time == NOW + timedelta(seconds=2)
    assert d.record.acquire_time == NOW - timedelta(hours=1)
    assert d.record.transitions == 3


@pytest.mark.parametrize("unchanged", [0.0, 5.0, 14.9])
def test_a_live_lease_of_another_is_waited_for(unchanged: float) -> None:
    d = decide(held("b"), "a", NOW, unchanged, 15)
    assert d.move is Move.WAIT and d.record is None and d.holder == "b"


def test_an_expired_lease_is_taken_over_counting_a_transition() -> None:
    d = decide(held("b", transitions=3), "a", NOW, 15.0, 15)
    assert d.move is Move.ACQUIRE and d.holder == "a"
    assert d.record == LeaseRecord("a", 15, NOW, NOW, 4)


def test_expiry_is_judged_on_the_observers_clock_not_the_renew_time() -> None:
    # The holder's clock is an hour behind ours: its renewTime looks ancient, yet the record
    # changed a second ago as we saw it — still live.
    stale_looking = held("b", renewed=NOW - timedelta(hours=1))
    assert decide(stale_looking, "a", NOW, 1.0, 15).move is Move.WAIT


def test_a_released_lease_is_taken_at_once() -> None:
    released = LeaseRecord("", 1, NOW, NOW, 2)
    d = decide(released, "a", NOW, 0.0, 15)
    assert d.move is Move.ACQUIRE and d.record is not None and d.record.transitions == 3


def test_the_lease_durations_of_the_holder_count_not_ours() -> None:
    long_lease = LeaseRecord("b", 60, NOW, NOW, 0)
    assert decide(long_lease, "a", NOW, 30.0, 15).move is Move.WAIT
    assert decide(long_lease, "a", NOW, 60.0, 15).move is Move.ACQUIRE


def test_a_record_round_trips_through_the_lease_spec() -> None:
    record = LeaseRecord("pod-1", 15, NOW, NOW + timedelta(microseconds=1500), 7)
    spec = record.to_spec()
    assert spec["renewTime"] == "2026-12-06T04:30:00.001500Z"
    assert spec == {
        "holderIdentity": "pod-1",
        "leaseDurationSeconds": 15,
        "leaseTransitions": 7,
        "acquireTime": format_micro(NOW),
        "renewTime": "2026-12-06T04:30:00.001500Z",
    }
    assert LeaseRecord.from_spec(spec) == record
    assert LeaseRecord.from_spec({}) == LeaseRecord("", 0, None, None, 0)


@pytest.fixture
def elected() -> Iterator[None]:
    fence.enable()
    yield
    fence.disable()


def test_without_leader_election_the_fence_is_open() -> None:
    fence.disable()
    fence.check("create Job")
    fence.revoke()  # a no-op without leader election
    assert fence.open_now()


def test_the_fence_is_closed_until_granted_and_after_its_deadline(elected: None) -> None:
    with pytest.raises(fence.NotLeader, match="create Job not done"):
        fence.check("create Job")
    fence.grant(time.monotonic() + 60)
    fence.check("create Job")
    fence.grant(time.monotonic() - 0.001)  # a frozen leader waking past its deadline
    assert not fence.open_now()
    fence.grant(time.monotonic() + 60)
    fence.revoke()
    with pytest.raises(fence.NotLeader):
        fence.check("webhook")
