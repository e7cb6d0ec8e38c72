"""Consecutive-result counting: when an observation changes a check's state."""

from __future__ import annotations

from dataclasses import dataclass

from stronghold_operator.models.health import CheckState


@dataclass(frozen=True)
class Counted:
    state: CheckState
    successes: int
    failures: int


def count(
    previous_state: CheckState | None,
    successes: int,
    failures: int,
    observed: CheckState,
    failure_threshold: int,
    success_threshold: int,
) -> Counted:
    """Consecutive-result counting, like Kubernetes probes.

    A bad result (Warning/Critical) changes a good state only after ``failure_threshold``
    consecutive bad results; a good one ends a bad state after ``success_threshold``
    consecutive good results. Unknown (no answer this time) counts as neither. While a
    state is already bad, the level follows the observation at once (Warning <-> Critical).
    """
    prev: CheckState = previous_state or "Unknown"
    if observed == "Unknown":
        return Counted(prev, successes, failures)
    if observed == "Healthy":
        succ = successes + 1
        if prev == "Healthy" or succ >= success_threshold:
            return Counted("Healthy", succ, 0)
        return Counted(prev, succ, 0)
    fail = failures + 1
    if fail >= failure_threshold or prev in ("Warning", "Critical"):
        return Counted(observed, 0, fail)
    return Counted(prev, 0, fail)
