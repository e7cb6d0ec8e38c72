"""Ratios judged on the interval's sample: counter deltas, resets, and a minimum sample.

A ratio of requests (the cache hit ratio) means something only over enough requests and
only over the time it describes. So it is judged on the counters' increase since the
previous probe of the same check by the same policy (not since the target started), and
only when that interval holds at least a minimum number of requests; a counter reset (the
target restarted) or a baseline that is not the previous probe starts a fresh baseline
and judges nothing that round.

Why the baseline is per policy and check (kept in the check's status ``measurements``,
dropped with the policy), not per target: identical probes of several policies are
coalesced (probes/runner.py), but each policy judges its own interval. A baseline shared
by target would be "since whichever policy probed last" — a one-second window of a 30 s
policy — so its sample would depend on what other policies exist.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Memcached's ``time - uptime`` is its start time; more apart than this is a new process.
START_TOLERANCE_S = 2.0
DEFAULT_MIN_SAMPLE = 100


@dataclass(frozen=True)
class SampleRule:
    """How a round judges ratios.

    ``min_sample``: requests an interval needs for its ratio to be judged. ``max_age_s``:
    a baseline older than this (by the target's clock) is not the previous probe (the
    operator restarted, the target was unreachable meanwhile): a fresh baseline. ``one_shot``:
    there is no previous probe by design (``stronghold check``): the counters since the
    target started are judged, with the same minimum.
    """

    min_sample: int = DEFAULT_MIN_SAMPLE
    max_age_s: float | None = None
    one_shot: bool = False


@dataclass(frozen=True)
class Window:
    """The increase of each counter over one interval; ``seconds`` when the target says."""

    deltas: Mapping[str, float]
    seconds: float | None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _started(numbers: Mapping[str, Any]) -> float | None:
    at, up = _number(numbers.get("sampledAt")), _number(numbers.get("uptimeSeconds"))
    return None if at is None or up is None else at - up


def window(
    now: Mapping[str, Any],
    before: Mapping[str, Any],
    counters: Sequence[str],
    max_age_s: float | None = None,
) -> Window | str:
    """The counters' increase since ``before`` (the previous probe's numbers), or why there
    is none: ``no baseline``, ``counter reset``, ``baseline too old``.

    A reset is a counter that went down, or a target whose start time (``sampledAt`` minus
    ``uptimeSeconds``, when both are known) moved: a restart between two probes may leave
    the new counters above the old ones.
    """
    pairs = [(_number(now.get(k)), _number(before.get(k))) for k in counters]
    if any(a is None for a, _ in pairs):
        return "no data"
    if any(b is None for _, b in pairs):
        return "no baseline"
    if any(a < b for a, b in pairs):  # type: ignore[operator]
        return "counter reset"
    started_now, started_before = _started(now), _started(before)
    if (
        started_now is not None
        and started_before is not None
        and abs(started_now - started_before) > START_TOLERANCE_S
    ):
        return "counter reset"
    seconds: float | None = None
    at_now, at_before = _number(now.get("sampledAt")), _number(before.get("sampledAt"))
    if at_now is not None and at_before is None:
        return "no baseline"  # counters of unknown age (written by an older operator)
    if at_now is not None and at_before is not None:
        seconds = at_now - at_before
        if seconds < 0:
            return "counter reset"
        if max_age_s is not None and seconds > max_age_s:
            return "baseline too old"
    deltas = {k: a - b for k, (a, b) in zip(counters, pairs, strict=True)}  # type: ignore[operator]
    return Window(deltas, seconds)


@dataclass(frozen=True)
class Ratio:
    """A ratio in % over ``sample`` requests; ``judged`` False says why in ``note``."""

    percent: float | None
    sample: int
    judged: bool
    note: str = ""


def ratio(part: float, whole: float, min_sample: int, unit: str, over: str = "") -> Ratio:
    """``part / whole`` in %, judged only with at least ``min_sample`` in ``whole``."""
    percent = round(100.0 * part / whole, 2) if whole > 0 else None
    sample = int(whole)
    if sample < min_sample:
        note = f"sample too small: {sample} {unit}{over} < {min_sample}"
        return Ratio(percent, sample, False, note)
    return Ratio(percent, sample, True)
