"""A finding (something wrong with one check, at a level) and the bands that raise one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from stronghold_operator.models.health import LatencyBands, LowerBands, UpperBands

Level = Literal["warning", "critical"]


@dataclass(frozen=True)
class Finding:
    """Something wrong with one check, at a level; ``component`` for health documents."""

    code: str
    level: Level
    message: str
    component: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "level": self.level, "message": self.message}
        if self.component:
            out["component"] = self.component
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        level: Level = "critical" if data.get("level") == "critical" else "warning"
        return cls(
            str(data.get("code", "")), level, str(data.get("message", "")), data.get("component")
        )


def _ms(d: timedelta) -> float:
    return d.total_seconds() * 1000.0


def band_upper(value: float, bands: UpperBands) -> Level | None:
    if value >= bands.critical:
        return "critical"
    if value >= bands.warning:
        return "warning"
    return None


def band_lower(value: float, bands: LowerBands) -> Level | None:
    if value < bands.critical_below:
        return "critical"
    if value < bands.warning_below:
        return "warning"
    return None


def band_latency(latency_ms: float, bands: LatencyBands) -> Level | None:
    if latency_ms >= _ms(bands.critical):
        return "critical"
    if latency_ms >= _ms(bands.warning):
        return "warning"
    return None


def latency_finding(latency_ms: float | None, bands: LatencyBands, what: str) -> list[Finding]:
    if latency_ms is None:
        return []
    level = band_latency(latency_ms, bands)
    if level == "critical":
        limit = _ms(bands.critical)
        return [Finding("LatencyCritical", level, f"{what} {latency_ms:.0f}ms >= {limit:.0f}ms")]
    if level == "warning":
        limit = _ms(bands.warning)
        return [Finding("LatencyWarning", level, f"{what} {latency_ms:.0f}ms >= {limit:.0f}ms")]
    return []
