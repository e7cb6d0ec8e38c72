"""Security events in access logs: parse, match named rules, count over a sliding window.

Pure: lines (with the timestamps Docker and the kubelet put in front of them) and the
previous state come in, counts, samples and the new state go out. The state is what the
check's status ``measurements`` keep, so it survives an operator restart with the status:

- memory is bounded per rule, not per line: counts in time buckets (a sixtieth of the
  rule's window, at least one second), at most ``MAX_BUCKETS`` of them, and a few samples;
- a cursor (the newest timestamp counted) and the hashes of the lines counted at exactly
  that timestamp: a line at or before the cursor is never counted twice, whatever the
  reader sends again (readers overlap on purpose: Docker's ``since`` has second precision).

Samples are redacted of anything that looks like a credential before they are kept.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from stronghold_operator.logic.health.redaction import redact_credentials
from stronghold_operator.models.health import HealthPolicySpec, LogRule, Severity
from stronghold_operator.models.logtime import NS, parse_stamp, split_stamp, stamp_of

MAX_BUCKETS = 61
MAX_SEEN = 256  # same-timestamp hashes kept; more lines in one nanosecond may count twice
SAMPLE_CHARS = 300

# nginx/gunicorn "combined": addr ident user [time] "request" status size "referer" "agent"
_COMBINED = re.compile(
    r'^(?P<remote>\S+) \S+ \S+ \[[^\]]*\] "(?P<request>[^"]*)" (?P<status>\d{3}) \S+'
    r'(?: "(?P<referer>[^"]*)" "(?P<agent>[^"]*)")?'
)


@dataclass(frozen=True)
class AccessLine:
    """The fields of one access-log line (``None``: a plain line, not an access log)."""

    remote: str
    method: str
    path: str  # URL-decoded, query included: what injection patterns look at
    status: int
    agent: str


def parse_access(text: str) -> AccessLine | None:
    """The combined-format fields of ``text``, or None for any other line."""
    m = _COMBINED.match(text)
    if m is None:
        return None
    method, _, rest = m["request"].partition(" ")
    target = rest.rsplit(" ", 1)[0] if " " in rest else rest
    return AccessLine(
        remote=m["remote"],
        method=method,
        path=unquote_plus(target),
        status=int(m["status"]),
        agent=m["agent"] or "",
    )


@dataclass(frozen=True)
class Rule:
    """One effective rule, compiled."""

    name: str
    regex: re.Pattern[str] | None
    field: str | None
    status_in: frozenset[int]
    matches: re.Pattern[str] | None
    window_s: int
    above: int
    severity: Severity

    @property
    def bucket_s(self) -> int:
        return max(1, self.window_s // (MAX_BUCKETS - 1))


def compile_rules(rules: Iterable[LogRule]) -> list[Rule]:
    """The spec's effective rules (``LogsCheck.effective_rules``) ready to match."""
    out = []
    for r in rules:
        window = int(r.window.total_seconds()) if r.window is not None else 3600
        out.append(
            Rule(
                name=r.name,
                regex=re.compile(r.regex, re.IGNORECASE) if r.regex else None,
                field=r.field,
                status_in=frozenset(r.status_in or ()),
                matches=re.compile(r.matches, re.IGNORECASE) if r.matches else None,
                window_s=window,
                above=r.above if r.above is not None else 0,
                severity=r.severity or "P3",
            )
        )
    return out


def _field(line: str, access: AccessLine | None, name: str) -> str | None:
    if name == "line":
        return line
    if access is None:
        return None
    return {
        "status": str(access.status),
        "method": access.method,
        "path": access.path,
        "userAgent": access.agent,
        "remoteAddr": access.remote,
    }.get(name)


def matches(rule: Rule, line: str, access: AccessLine | None) -> bool:
    """Whether ``line`` (parsed as ``access``) is an event of ``rule``."""
    if rule.regex is not None and not rule.regex.search(line):
        return False
    if rule.field is None:
        return rule.regex is not None
    if rule.status_in:
        return access is not None and access.status in rule.status_in
    value = _field(line, access, rule.field)
    if value is None:
        return False
    return rule.matches is None or rule.matches.search(value) is not None


@dataclass
class RuleState:
    """Counts in time buckets (bucket start in s -> count), the total ever, samples."""

    buckets: dict[int, int] = field(default_factory=dict)
    total: int = 0
    samples: list[str] = field(default_factory=list)


@dataclass
class LogState:
    cursor_ns: int | None = None
    seen: set[str] = field(default_factory=set)
    rules: dict[str, RuleState] = field(default_factory=dict)


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def state_from(measurements: Mapping[str, Any]) -> LogState:
    """The state a previous round left in the check's measurements (garbage is ignored)."""
    state = LogState()
    cursor = measurements.get("cursor")
    if isinstance(cursor, str):
        state.cursor_ns = parse_stamp(cursor)
    seen = measurements.get("seenAtCursor")
    if isinstance(seen, list) and state.cursor_ns is not None:
        state.seen = {s for s in seen if isinstance(s, str)}
    for name, raw in (measurements.get("rules") or {}).items():
        if not isinstance(raw, Mapping):
            continue
        rs = RuleState()
        for pair in raw.get("buckets") or ():
            if isinstance(pair, list) and len(pair) == 2:
                start, n = _int(pair[0]), _int(pair[1])
                if start is not None and n is not None and n > 0:
                    rs.buckets[start] = rs.buckets.get(start, 0) + n
        rs.total = _int(raw.get("total")) or 0
        rs.samples = [s for s in raw.get("samples") or () if isinstance(s, str)]
        state.rules[str(name)] = rs
    return state


def _line_key(ns: int, text: str, occurrence: int) -> str:
    digest = hashlib.blake2b(f"{ns} {occurrence} {text}".encode(), digest_size=8)
    return digest.hexdigest()


@dataclass(frozen=True)
class Step:
    """What one batch of lines did: the new state, per-rule counts in their windows, the
    lines new this round (per rule), lines without a timestamp (not counted)."""

    state: LogState
    counts: dict[str, int]
    new: dict[str, int]
    lines_counted: int
    untimed: int


def _copy(before: LogState, rules: Sequence[Rule]) -> LogState:
    """A copy to update, with a fresh state for a rule new in the spec."""
    copied = {}
    for r in rules:
        old = before.rules.get(r.name) or RuleState()
        copied[r.name] = RuleState(dict(old.buckets), old.total, list(old.samples))
    return LogState(before.cursor_ns, set(before.seen), copied)


def _slide(rules: Sequence[Rule], state: LogState, now_s: float) -> dict[str, int]:
    """Drop the buckets out of each rule's window; the counts left in it."""
    counts = {}
    for r in rules:
        rs = state.rules[r.name]
        oldest = int(now_s) - r.window_s
        rs.buckets = {s: n for s, n in rs.buckets.items() if s + r.bucket_s > oldest}
        if len(rs.buckets) > MAX_BUCKETS:  # a window shortened in the spec
            rs.buckets = dict(sorted(rs.buckets.items())[-MAX_BUCKETS:])
        counts[r.name] = sum(rs.buckets.values())
        if not rs.buckets:
            rs.samples = []  # the evidence leaves with the events
    return counts


def _timed(raw_lines: Iterable[str], limit_ns: int | None) -> tuple[list[tuple[int, str]], int]:
    """(ns, line) of the lines up to ``limit_ns``, oldest first; and how many had no stamp."""
    timed: list[tuple[int, str]] = []
    untimed = 0
    for raw in raw_lines:
        ns, text = split_stamp(raw.rstrip("\r\n"))
        if ns is None:
            untimed += 1
        elif limit_ns is None or ns <= limit_ns:
            timed.append((ns, text))
    timed.sort(key=lambda p: p[0])
    return timed, untimed


def step(
    rules: Sequence[Rule],
    before: LogState,
    raw_lines: Iterable[str],
    now_s: float,
    *,
    max_samples: int = 5,
    limit_ns: int | None = None,
) -> Step:
    """Count the lines newer than the cursor, slide the windows to ``now_s``.

    ``raw_lines``: ``"<RFC 3339> <line>"`` in any order; a line after ``limit_ns`` is left
    for the next round (a reader stopped at its byte cap before it got there).
    """
    state = _copy(before, rules)
    timed, untimed = _timed(raw_lines, limit_ns)
    new = {r.name: 0 for r in rules}
    counted = 0
    occurrences: dict[tuple[int, str], int] = {}
    for ns, text in timed:
        nth = occurrences.get((ns, text), 0)
        occurrences[(ns, text)] = nth + 1
        key = _line_key(ns, text, nth)
        cursor = state.cursor_ns
        if cursor is not None and (ns < cursor or (ns == cursor and key in state.seen)):
            continue
        if cursor is None or ns > cursor:
            state.cursor_ns, state.seen = ns, set()
        if len(state.seen) < MAX_SEEN:
            state.seen.add(key)
        counted += 1
        access = parse_access(text)
        for r in rules:
            if not matches(r, text, access):
                continue
            rs = state.rules[r.name]
            start = (ns // NS) // r.bucket_s * r.bucket_s
            rs.buckets[start] = rs.buckets.get(start, 0) + 1
            rs.total += 1
            new[r.name] += 1
            if max_samples:
                rs.samples = [*rs.samples, redact_credentials(text)[:SAMPLE_CHARS]][-max_samples:]
    counts = _slide(rules, state, now_s)
    return Step(state, counts, new, counted, untimed)


def to_measurements(state: LogState, counts: Mapping[str, int]) -> dict[str, Any]:
    """The state as JSON for the check's status (read back by :func:`state_from`)."""
    out: dict[str, Any] = {
        "rules": {
            name: {
                "count": counts.get(name, 0),
                "total": rs.total,
                "buckets": [[s, n] for s, n in sorted(rs.buckets.items())],
                "samples": list(rs.samples),
            }
            for name, rs in state.rules.items()
        }
    }
    if state.cursor_ns is not None:
        out["cursor"] = stamp_of(state.cursor_ns)
        out["seenAtCursor"] = sorted(state.seen)
    return out


def cursor_seconds(measurements: Mapping[str, Any]) -> float | None:
    """Where the next read starts (s since the epoch), from the check's measurements."""
    cursor = measurements.get("cursor")
    ns = parse_stamp(cursor) if isinstance(cursor, str) else None
    return None if ns is None else ns / NS


def log_cursors(policy: HealthPolicySpec, status: Mapping[str, Any]) -> dict[str, float]:
    """Where each logs check of ``policy`` resumes reading, from the policy's status."""
    logs_checks = {c.name for c in policy.checks if c.logs is not None}
    out: dict[str, float] = {}
    for entry in status.get("checks") or ():
        if isinstance(entry, Mapping) and entry.get("name") in logs_checks:
            at = cursor_seconds(entry.get("measurements") or {})
            if at is not None:
                out[str(entry["name"])] = at
    return out
