"""Retry delays: between webhook attempts, and for a policy whose Secret is missing."""

from __future__ import annotations

from datetime import timedelta


def retry_delays(retries: int, base: float = 0.5, cap: float = 10.0) -> list[float]:
    """Exponential backoff between webhook attempts (pure; the caller sleeps)."""
    return [min(cap, base * (2**i)) for i in range(retries)]


def missing_secret_backoff(attempt: int, interval: timedelta) -> float:
    """Delay before retrying a policy whose Secret is missing: 5s doubling, capped."""
    cap = max(5.0, min(300.0, interval.total_seconds() * 4))
    return float(min(cap, 5.0 * (2 ** max(0, attempt))))
