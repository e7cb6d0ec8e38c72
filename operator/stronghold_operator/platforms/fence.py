"""The fence in front of every side effect another replica would repeat: creating a backup
Job, scaling a workload, sending a webhook.

With leader election (``stronghold run --leader-elect``) the elector grants the fence until
its last renewal plus the renew deadline, on the monotonic clock, which keeps counting while
the process is frozen. A leader that was frozen (SIGSTOP, a stalled node) past that point and
wakes up is refused here before its first write, even if its renewal loop has not run yet;
the elector then ends the process. Without leader election the fence is always open.
"""

from __future__ import annotations

import time


class NotLeader(RuntimeError):
    """This replica no longer holds the lease: the side effect was not made."""


class _Fence:
    # monotonic deadline; None: no leader election in this process (always open)
    until: float | None = None


_fence = _Fence()


def enable() -> None:
    """Leader election is on: closed until the first grant."""
    _fence.until = 0.0


def grant(until_monotonic: float) -> None:
    _fence.until = until_monotonic


def revoke() -> None:
    if _fence.until is not None:
        _fence.until = 0.0


def disable() -> None:
    """Back to no leader election (tests)."""
    _fence.until = None


def open_now() -> bool:
    return _fence.until is None or time.monotonic() < _fence.until


def check(action: str) -> None:
    """Raise :class:`NotLeader` unless this replica may act now."""
    if not open_now():
        raise NotLeader(f"not the leader: {action} not done (another replica holds the lease)")
