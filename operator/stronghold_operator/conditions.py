"""Kubernetes-style status conditions: one typed vocabulary, pure upsert logic.

Conditions follow the API conventions: a list keyed by ``type``; ``lastTransitionTime``
changes only when ``status`` changes; every write carries ``observedGeneration``.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

ConditionStatus = Literal["True", "False", "Unknown"]

# Condition types shared by every kind.
READY = "Ready"

# Reasons shared by every kind (one-word CamelCase, as the conventions ask).
REASON_INITIALIZING = "Initializing"
REASON_INVALID_SPEC = "InvalidSpec"
REASON_RECONCILED = "Reconciled"
REASON_SUSPENDED = "Suspended"
REASON_SECRET_MISSING = "SecretMissing"


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(when: datetime) -> str:
    """Kubernetes' timestamp format: UTC, seconds precision, trailing Z."""
    return _rfc3339_second(math.floor(when.timestamp()))


def parse_rfc3339(value: Any) -> datetime | None:
    """A timestamp read back from status or the API: aware UTC, or None when absent or bad."""
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, str) and value:
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


@functools.lru_cache(maxsize=16)
def _rfc3339_second(second: int) -> str:
    # Formatted once per second, not twice per policy per round.
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))


@dataclass(frozen=True)
class Condition:
    """One condition as a value; ``to_dict`` gives the status form."""

    type: str
    status: ConditionStatus
    reason: str
    message: str = ""

    def to_dict(self, generation: int | None, transition: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": transition,
        }
        if generation is not None:
            out["observedGeneration"] = generation
        return out


def upsert(
    existing: Sequence[Mapping[str, Any]] | None,
    updates: Iterable[Condition],
    generation: int | None,
    now: datetime,
) -> list[dict[str, Any]]:
    """Merge ``updates`` into ``existing`` keyed by type, preserving order.

    ``lastTransitionTime`` is kept when the status of a condition does not change, so
    ``kubectl describe`` shows how long a state has lasted, not when we last looked.
    """
    result: list[dict[str, Any]] = [dict(c) for c in existing or ()]
    index = {c.get("type"): i for i, c in enumerate(result)}
    stamp = rfc3339(now)
    for cond in updates:
        i = index.get(cond.type)
        if i is None:
            index[cond.type] = len(result)
            result.append(cond.to_dict(generation, stamp))
            continue
        old = result[i]
        transition = old.get("lastTransitionTime") if old.get("status") == cond.status else None
        result[i] = cond.to_dict(generation, str(transition or stamp))
    return result


def unknown_all(types: Iterable[str], reason: str = REASON_INITIALIZING) -> list[Condition]:
    """Every condition ``Unknown``: what a kind reports the first time it sees an object."""
    return [Condition(t, "Unknown", reason, "Not evaluated yet") for t in types]


def find(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    for c in conditions or ():
        if c.get("type") == type_:
            return c
    return None


@dataclass(frozen=True)
class Transition:
    """A condition whose status changed between two writes: material for an Event."""

    type: str
    old: str | None
    new: str
    reason: str
    message: str
    old_reason: str | None = None


def transitions(
    before: Sequence[Mapping[str, Any]] | None, after: Sequence[Mapping[str, Any]]
) -> list[Transition]:
    old = {c.get("type"): c for c in before or ()}
    out: list[Transition] = []
    for c in after:
        prev = old.get(c["type"])
        prev_status = prev.get("status") if prev else None
        # An empty reason is written as absent (see _clean): both are no reason.
        reason = c.get("reason") or ""
        if prev_status != c["status"] or (prev and (prev.get("reason") or "") != reason):
            out.append(
                Transition(
                    c["type"],
                    prev_status,
                    c["status"],
                    reason,
                    c.get("message", ""),
                    prev.get("reason") if prev else None,
                )
            )
    return out


def _same(a: Any, b: Any) -> bool:
    """Equal, ignoring ``lastTransitionTime`` and empty strings (absent and empty mean the
    same). Walks both at once and stops at the first difference: run for every status
    of every policy every round, copying both sides first was a measurable share of CPU."""
    if a == b:
        return True
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        keys = {k for k, v in a.items() if k != "lastTransitionTime" and v != ""}
        if keys != {k for k, v in b.items() if k != "lastTransitionTime" and v != ""}:
            return False
        return all(_same(a[k], b[k]) for k in keys)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return False


def _clean(value: Any) -> Any:
    """Drop empty strings: Kubernetes 1.20 reads ``""`` in a status patch as null and rejects
    it against a string schema (422). Absent and empty mean the same to a reader."""
    if isinstance(value, Mapping):
        return {k: _clean(v) for k, v in value.items() if v != ""}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _diff(current: Any, desired: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386 merge patch turning the ``current`` object into ``desired`` (full objects)."""
    cur = current if isinstance(current, Mapping) else {}
    out: dict[str, Any] = {k: None for k in cur if k not in desired}
    for k, v in desired.items():
        c = cur.get(k)
        if isinstance(v, Mapping) and isinstance(c, Mapping):
            sub = _diff(c, v)
            if sub:
                out[k] = sub
        elif not _same(c, v):
            out[k] = v
    return out


def status_delta(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch for the top-level status fields in ``desired`` that changed.

    Conditions are compared without timestamps; fields of ``current`` that ``desired`` does
    not name are left alone (a handler may write only part of the status), while keys that
    vanished *inside* a named object are deleted (null). Empty when nothing changed, so a
    handler patches status only when something did.
    """
    cur = current or {}
    wanted = _clean(dict(desired))
    out = _diff({k: cur[k] for k in wanted if k in cur}, wanted)
    for k, v in desired.items():
        if v == "" and cur.get(k) not in (None, ""):
            out[k] = None
    return out


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386: what the apiserver makes of ``target`` after the merge patch ``patch``.

    Daemons keep their own copy of the status they wrote this way, so their next
    :func:`status_delta` (and so whether they write at all) matches what the apiserver stores.
    """
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping):
            base = out.get(key)
            out[key] = merge_patch(base if isinstance(base, Mapping) else {}, value)
        else:
            out[key] = value
    return out
