"""Capacity trends: fit a history, project when it crosses its critical band.

Pure: samples in, verdicts out. The fits are numpy's least squares (``numpy.polyfit``), a
straight line for the linear trend and a straight line through ``log(value)`` for the growth
rate (constant percent per day). A trend counts as growth only when its slope is
significantly positive (more than two standard errors above zero): noise on a flat series
must not project a crossing, however far away.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np

DAY = 86400.0
MIN_POINTS = 3  # below that a line through the points says nothing about a trend
# A slope counts as growth only above this many standard errors (about 95 % one-sided).
SIGNIFICANCE = 2.0
ROUNDING = 1e-9

Model = Literal["linear", "growth", "earliest"]
Verdict = Literal["crossed", "critical", "ok", "flat", "no-data", "no-limit"]
# Worst first: the summary and the exit code read this order.
VERDICT_ORDER: tuple[Verdict, ...] = ("crossed", "critical", "ok", "flat", "no-limit", "no-data")

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY, "w": 7 * DAY, "y": 365 * DAY}


def parse_duration(text: str) -> timedelta:
    """A Prometheus duration: ``30d``, ``2w``, ``1h30m``, ``90s`` (a bare number: seconds)."""
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        pos, seconds = 0, 0.0
        for m in _DURATION.finditer(value):
            if m.start() != pos:
                break
            seconds += float(m.group(1)) * _UNIT_S[m.group(2)]
            pos = m.end()
        if pos != len(value) or not value:
            raise ValueError(f"{text!r} is not a duration such as 30d, 12h or 1w") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{text!r}: must be a positive duration")
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class Resource:
    """One thing to project: its PromQL, its limit and the fraction of it that is critical.

    The limit is a number, or an instant query (``limit_query``) whose series are matched to
    the usage series by their shared labels, or ``limit_from="scalingpolicy"``: each series'
    ScalingPolicy (labels ``namespace`` and ``policy``) and its ``spec.maxReplicas``.
    """

    name: str
    title: str
    query: str
    unit: str = ""
    critical: float = 1.0
    limit: float | None = None
    limit_query: str | None = None
    limit_from: Literal["scalingpolicy"] | None = None


# The guide's critical bands ("Key Metrics to Monitor": CPU 90 %, memory 95 %, disk 95 %,
# database connections 95 %); replicas are critical at maxReplicas (no room left to scale).
DEFAULT_RESOURCES: tuple[Resource, ...] = (
    Resource(
        "db_size",
        "Database size vs its volume",
        "sum(pg_database_size_bytes)",
        unit="bytes",
        critical=0.95,
        limit_query='sum(kubelet_volume_stats_capacity_bytes{persistentvolumeclaim=~".*(postgres|pgdata).*"})',
    ),
    Resource(
        "connections",
        "PostgreSQL connections vs max_connections",
        "sum(pg_stat_activity_count)",
        critical=0.95,
        limit_query="max(pg_settings_max_connections)",
    ),
    Resource(
        "web_cpu",
        "Web tier CPU (percent of requests)",
        'stronghold_scaling_utilisation_percent{resource="cpu"}',
        unit="%",
        critical=0.90,
        limit=100.0,
    ),
    Resource(
        "web_memory",
        "Web tier memory (percent of requests)",
        'stronghold_scaling_utilisation_percent{resource="memory"}',
        unit="%",
        critical=0.95,
        limit=100.0,
    ),
    Resource(
        "replicas",
        "Web tier replicas vs the ScalingPolicy's maxReplicas",
        'stronghold_scaling_replicas{kind="current"}',
        critical=1.0,
        limit_from="scalingpolicy",
    ),
    Resource(
        "queue_depth",
        "RabbitMQ queue depth",
        "sum by (queue) (rabbitmq_queue_messages)",
        unit="messages",
        critical=1.0,
        limit=10000.0,
    ),
)


@dataclass(frozen=True)
class Trend:
    """Least-squares fits of one series; ``slope`` in units per day, ``growth`` per day."""

    intercept: float  # the linear fit's value at ``origin``
    slope: float
    slope_stderr: float
    origin: float  # epoch seconds the fits are anchored at (the last sample)
    r2: float
    growth: float | None = None  # log-linear: fractional growth per day (0.02 = 2 %/day)
    growth_stderr: float | None = None
    log_intercept: float | None = None

    def linear_at(self, t: float) -> float:
        return self.intercept + self.slope * (t - self.origin) / DAY

    def growth_at(self, t: float) -> float | None:
        if self.growth is None or self.log_intercept is None:
            return None
        return math.exp(self.log_intercept + math.log1p(self.growth) * (t - self.origin) / DAY)

    @property
    def growing(self) -> bool:
        return self.slope > 0 and self.slope > SIGNIFICANCE * self.slope_stderr


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(intercept, slope, stderr of the slope) of ``numpy.polyfit``'s straight line."""
    if len(x) > 3:
        coef, cov = np.polyfit(x, y, 1, cov=True)
        stderr = math.sqrt(max(float(cov[0][0]), 0.0))
    else:  # too few points for polyfit's covariance estimate
        coef = np.polyfit(x, y, 1)
        stderr = math.inf if not np.allclose(np.polyval(coef, x), y) else 0.0
    return float(coef[1]), float(coef[0]), stderr


def fit(times: Sequence[float], values: Sequence[float]) -> Trend | None:
    """Linear and growth-rate fits of samples (epoch seconds, values); None below 3 points."""
    t = np.asarray(times, dtype=float)
    y = np.asarray(values, dtype=float)
    keep = np.isfinite(t) & np.isfinite(y)
    t, y = t[keep], y[keep]
    if len(t) < MIN_POINTS or float(np.ptp(t)) <= 0:
        return None
    origin = float(t.max())
    x = (t - origin) / DAY
    intercept, slope, stderr = _line(x, y)
    span = float(np.ptp(x))
    # Rounding noise of a constant series is no trend (a relative 1e-9 over the whole span).
    if abs(slope) * span <= ROUNDING * float(np.max(np.abs(y))):
        slope = 0.0
    residual = y - (intercept + slope * x)
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residual**2)) / total if total > 0 else 1.0
    growth = growth_err = log_intercept = None
    if bool(np.all(y > 0)):
        li, ls, lerr = _line(x, np.log(y))
        ls = 0.0 if abs(ls) * span <= ROUNDING else ls
        log_intercept, growth = li, math.expm1(ls)
        growth_err = lerr if math.isfinite(lerr) else None
    return Trend(
        intercept=intercept,
        slope=slope,
        slope_stderr=stderr,
        origin=origin,
        r2=r2,
        growth=growth,
        growth_stderr=growth_err,
        log_intercept=log_intercept,
    )


def linear_crossing(trend: Trend, threshold: float, now: float) -> float | None:
    """Epoch seconds the linear trend reaches ``threshold`` (``now`` if already there);
    None when it does not grow significantly."""
    if trend.linear_at(now) >= threshold:
        return now
    if not trend.growing:
        return None
    return trend.origin + (threshold - trend.intercept) / trend.slope * DAY


def growth_crossing(trend: Trend, threshold: float, now: float) -> float | None:
    """Epoch seconds the constant-growth-rate trend reaches ``threshold``; None without growth."""
    at_now = trend.growth_at(now)
    if at_now is None or trend.log_intercept is None or trend.growth is None or threshold <= 0:
        return None
    if at_now >= threshold:
        return now
    rate = math.log1p(trend.growth)
    # Same significance rule as the linear slope, on the log scale.
    if rate <= 0 or trend.growth_stderr is None or rate <= SIGNIFICANCE * trend.growth_stderr:
        return None
    return trend.origin + (math.log(threshold) - trend.log_intercept) / rate * DAY


@dataclass(frozen=True)
class Assessment:
    """One series of one resource, judged against its band over the horizon."""

    resource: Resource
    labels: Mapping[str, str]
    times: tuple[float, ...]
    values: tuple[float, ...]
    limit: float | None
    trend: Trend | None
    verdict: Verdict
    crossing: float | None = None  # epoch seconds of the chosen model's crossing
    linear_crossing: float | None = None
    growth_crossing: float | None = None
    note: str = ""

    @property
    def threshold(self) -> float | None:
        return None if self.limit is None else self.limit * self.resource.critical

    @property
    def current(self) -> float | None:
        return self.values[-1] if self.values else None

    def days_left(self, now: float) -> float | None:
        return None if self.crossing is None else max(0.0, (self.crossing - now) / DAY)

    @property
    def series_name(self) -> str:
        inner = ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
        return f"{self.resource.name}{{{inner}}}" if inner else self.resource.name


def assess(
    resource: Resource,
    labels: Mapping[str, str],
    times: Sequence[float],
    values: Sequence[float],
    limit: float | None,
    *,
    now: float,
    horizon: timedelta,
    model: Model = "linear",
    note: str = "",
) -> Assessment:
    """The verdict for one series: crossed, critical within the horizon, ok, flat, ..."""
    base = {
        "resource": resource,
        "labels": dict(labels),
        "times": tuple(times),
        "values": tuple(values),
        "limit": limit,
        "note": note,
    }
    trend = fit(times, values)
    if trend is None:
        return Assessment(trend=None, verdict="no-data", **base)  # type: ignore[arg-type]
    if limit is None or not math.isfinite(limit) or limit <= 0:
        return Assessment(trend=trend, verdict="no-limit", **base)  # type: ignore[arg-type]
    threshold = limit * resource.critical
    lin = linear_crossing(trend, threshold, now)
    gro = growth_crossing(trend, threshold, now)
    if model == "linear":
        chosen = lin
    elif model == "growth":
        chosen = gro
    else:
        chosen = min((c for c in (lin, gro) if c is not None), default=None)
    if values[-1] >= threshold:
        verdict: Verdict = "crossed"
        chosen = now
    elif chosen is None:
        verdict = "flat"
    elif chosen <= now + horizon.total_seconds():
        verdict = "critical"
    else:
        verdict = "ok"
    return Assessment(
        trend=trend,
        verdict=verdict,
        crossing=chosen,
        linear_crossing=lin,
        growth_crossing=gro,
        **base,  # type: ignore[arg-type]
    )


def match_limit(
    labels: Mapping[str, str], limits: Sequence[tuple[Mapping[str, str], float]]
) -> float | None:
    """The limit for a usage series: the limit series that agrees on every label name both
    carry; a lone limit sharing no label name with the series applies to it as well."""
    for lim_labels, value in limits:
        shared = set(lim_labels) & set(labels)
        if shared and all(lim_labels[k] == labels[k] for k in shared):
            return value
    if len(limits) == 1 and not set(limits[0][0]) & set(labels):
        return limits[0][1]
    return None


@dataclass(frozen=True)
class Report:
    """Every assessment, with the window it was computed over."""

    now: float
    start: float
    horizon: timedelta
    model: Model
    assessments: tuple[Assessment, ...]
    errors: tuple[str, ...] = field(default=())

    @property
    def at_risk(self) -> tuple[Assessment, ...]:
        return tuple(a for a in self.assessments if a.verdict in ("crossed", "critical"))

    @property
    def has_history(self) -> bool:
        return any(a.verdict != "no-data" for a in self.assessments)

    def sorted(self) -> list[Assessment]:
        """Worst first, then the soonest crossing."""
        return sorted(
            self.assessments,
            key=lambda a: (
                VERDICT_ORDER.index(a.verdict),
                a.crossing if a.crossing is not None else math.inf,
                a.series_name,
            ),
        )

    def to_json(self) -> dict[str, object]:
        def iso(t: float | None) -> str | None:
            if t is None:
                return None
            return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")

        return {
            "now": iso(self.now),
            "start": iso(self.start),
            "horizonDays": self.horizon.total_seconds() / DAY,
            "model": self.model,
            "atRisk": len(self.at_risk),
            "errors": list(self.errors),
            "resources": [
                {
                    "resource": a.resource.name,
                    "labels": dict(a.labels),
                    "verdict": a.verdict,
                    "points": len(a.values),
                    "current": a.current,
                    "limit": a.limit,
                    "threshold": a.threshold,
                    "slopePerDay": a.trend.slope if a.trend else None,
                    "slopeStderr": a.trend.slope_stderr if a.trend else None,
                    "growthPerDay": a.trend.growth if a.trend else None,
                    "r2": a.trend.r2 if a.trend else None,
                    "crossing": iso(a.crossing),
                    "linearCrossing": iso(a.linear_crossing),
                    "growthCrossing": iso(a.growth_crossing),
                    "daysLeft": a.days_left(self.now),
                    "note": a.note,
                }
                for a in self.sorted()
            ],
        }
