"""When a slow answer is the operator's fault, not the target's (issue 26).

A probe's timer runs on the operator's event loop. When the operator itself is overloaded
(a thousand rounds due at once, a stalled loop), a round starts late and a probe's measured
time includes the loop's own stall: a healthy target then "times out". Such a result is not
evidence against the target. It is not counted either way (like any Unknown observation,
thresholds.count): the check keeps its state and counters, no incident opens on it, and the
round says why (reason ``OperatorOverloaded``).

Only slow answers are discounted (a timeout, a latency finding): a refused connection, an
HTTP 500 or a component reported down is the target's answer however late it was asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from stronghold_operator.logic.health.findings import Finding
from stronghold_operator.probes.base import ProbeResult

REASON_OVERLOADED = "OperatorOverloaded"
# A round that starts more than half an interval late: the operator is behind its schedule.
LATE_FRACTION = 0.5
# The loop stalled for at least half of what the probe measured (or of its timeout): at most
# half of the measurement was the target's, too little to judge it.
LAG_FRACTION = 0.5
# Findings a stalled operator can produce on a healthy target.
SLOW_CODES = frozenset({"Timeout", "LatencyWarning", "LatencyCritical"})


@dataclass(frozen=True)
class Load:
    """The operator's own state during one round."""

    lateness_s: float = 0.0  # how late the round started against its schedule
    lag_s: float = 0.0  # the worst event-loop stall seen while its probes ran

    def behind(self, interval_s: float) -> bool:
        """The round started so late that the operator is behind its schedule."""
        return self.lateness_s > LATE_FRACTION * interval_s


def discounted(
    result: ProbeResult,
    findings: Sequence[Finding],
    latency_ms: float | None,
    timeout_s: float,
    interval_s: float,
    load: Load,
) -> str | None:
    """Why this bad result is not counted against its target; None when it is.

    ``findings`` are the assessment's (empty: nothing to discount); ``latency_ms`` what the
    probe measured (None for a timeout without a duration).
    """
    if not findings or any(f.code not in SLOW_CODES for f in findings):
        return None
    timed_out = result.failure == "Timeout" or any(f.code == "Timeout" for f in findings)
    measured = timeout_s if timed_out or latency_ms is None else min(timeout_s, latency_ms / 1e3)
    if load.lag_s >= LAG_FRACTION * measured:
        return (
            f"not counted: the operator's event loop stalled {load.lag_s:.2f}s during a"
            f" probe of {measured:.2f}s ({REASON_OVERLOADED})"
        )
    if load.behind(interval_s):
        return (
            f"not counted: the round started {load.lateness_s:.1f}s late (interval"
            f" {interval_s:g}s; {REASON_OVERLOADED})"
        )
    return None
