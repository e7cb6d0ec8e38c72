"""logic/ratelimit: the token bucket, the back-off and which writes go first."""

from __future__ import annotations

import pytest

from stronghold_operator.logic import ratelimit
from stronghold_operator.logic.ratelimit import TokenBucket, backoff_delay


def test_the_burst_goes_at_once_then_qps() -> None:
    b = TokenBucket(qps=10, burst=3, now=0.0)
    assert [b.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert b.wait(0.0) == pytest.approx(0.1)
    assert not b.take(0.05) and b.take(0.1)
    assert b.take(10.0) and b.tokens == pytest.approx(2.0)  # refilled to the burst, no more


def test_a_pause_holds_every_token() -> None:
    b = TokenBucket(qps=10, burst=5, now=0.0)
    b.pause(0.0, 2.0)
    assert b.wait(1.0) == pytest.approx(1.0) and not b.take(1.0)
    assert b.take(2.0)
    b.pause(2.0, 0.5)
    b.pause(2.0, 0.1)  # a shorter pause does not shorten the longer one
    assert b.wait(2.0) == pytest.approx(0.5)


def test_nonsense_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        TokenBucket(qps=0, burst=1, now=0)
    with pytest.raises(ValueError):
        TokenBucket(qps=1, burst=0, now=0)


@pytest.mark.parametrize("r", [0.0, 0.5, 1.0])
def test_backoff_doubles_with_jitter_and_is_capped(r: float) -> None:
    delays = [backoff_delay(a, None, base=1, cap=8, rand=lambda: r) for a in range(6)]
    for attempt, d in enumerate(delays):
        step = min(8, 2**attempt)
        assert step / 2 <= d <= step
    assert delays[-1] <= 8


def test_retry_after_is_a_floor() -> None:
    assert backoff_delay(0, 30, base=1, rand=lambda: 0.0) == 30
    assert 30 <= backoff_delay(0, 30, base=1, rand=lambda: 1.0) <= 36
    assert backoff_delay(6, 1, base=1, cap=60, rand=lambda: 1.0) == 60  # back-off is longer


def test_significant_writes() -> None:
    assert ratelimit.is_significant({"x": 1}, moved=0, first=True)
    assert ratelimit.is_significant({"x": 1}, moved=1, first=False)
    assert ratelimit.is_significant({"observedGeneration": 2}, moved=0, first=False)
    assert not ratelimit.is_significant({"currentReplicas": 3}, moved=0, first=False)
