"""Timestamps in front of log lines (Docker's and the kubelet's ``timestamps=true``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

NS = 1_000_000_000
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")


def parse_stamp(stamp: str) -> int | None:
    """RFC 3339 with up to nanoseconds (Docker trims trailing zeros) -> ns since the epoch."""
    m = _STAMP.match(stamp)
    if m is None:
        return None
    zone = "+00:00" if m[3] == "Z" else m[3]
    try:
        seconds = datetime.fromisoformat(m[1] + zone).timestamp()
    except ValueError:
        return None
    frac = int((m[2] or "0").ljust(9, "0"))
    return int(seconds) * NS + frac


def split_stamp(raw: str) -> tuple[int | None, str]:
    """``"<RFC 3339> <line>"`` (``timestamps=true``) -> (ns, line); (None, raw) if not so."""
    stamp, sep, text = raw.partition(" ")
    ns = parse_stamp(stamp) if sep else None
    return (ns, text) if ns is not None else (None, raw)


def stamp_of(ns: int) -> str:
    """ns since the epoch -> RFC 3339 with nanoseconds (what status shows)."""
    whole = datetime.fromtimestamp(ns // NS, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{whole}.{ns % NS:09d}Z"
