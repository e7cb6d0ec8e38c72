"""The status writer kinds share: diff, observedGeneration, patch, transition Events."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import datetime
from typing import Any

import kopf

from stronghold_operator import conditions as cond
from stronghold_operator.models import scaling
from stronghold_operator.models.status import StatusModel
from stronghold_operator.platforms.kube import Kube, patch_status

# Condition types that are bad when True (the rest are bad when False). Kinds with a typed
# vocabulary contribute theirs; the others are listed until they move to one.
_BAD_WHEN_TRUE = {"Degraded", "IncidentOpen", "BackupStale"} | scaling.VOCABULARY.bad_when_true


def is_bad(t: cond.Transition) -> bool:
    if t.type in _BAD_WHEN_TRUE:
        return t.new == "True"
    return t.new == "False"


def compute_status(
    body: Mapping[str, Any],
    status: Mapping[str, Any],
    desired: Mapping[str, Any],
    updates: Iterable[cond.Condition],
    now: datetime,
) -> tuple[dict[str, Any], list[cond.Transition]]:
    """Merge conditions and set observedGeneration; return (changed fields, transitions).

    The changed-fields dict is empty when nothing changed, so callers skip the write.
    """
    generation = body.get("metadata", {}).get("generation")
    before = list(status.get("conditions") or [])
    merged = cond.upsert(before, updates, generation, now)
    full = dict(desired)
    full["conditions"] = merged
    full["observedGeneration"] = generation
    return cond.status_delta(status, full), cond.transitions(before, merged)


def announce(body: kopf.Body, moved: Iterable[cond.Transition]) -> None:
    """One Event per condition transition a human cares about."""
    for t in moved:
        # A condition's first value (from nothing) is not news; Unknown -> X after that is.
        if t.old is None:
            continue
        kind = "Warning" if is_bad(t) else "Normal"
        kopf.event(body, type=kind, reason=t.reason, message=f"{t.type}={t.new}: {t.message}")


async def write_status(
    kube: Kube,
    plural: str,
    body: kopf.Body,
    status: StatusModel,
    now: datetime,
    current: Mapping[str, Any] | None = None,
    events_for: Collection[str] | None = None,
) -> dict[str, Any]:
    """Write a typed status of one of our objects; returns the status as the apiserver now has it.

    The fields the model set are diffed against ``current`` (default: the body's status)
    with the conditions merged by type (``lastTransitionTime`` kept while unchanged) and
    ``observedGeneration`` set; nothing is patched when nothing changed. Condition
    transitions become Events. Callers that write twice in one pass pass the returned
    status as ``current`` the second time. ``events_for`` limits the Events to those
    condition types (a kind that reports its other steps with Events of its own).
    """
    before: Mapping[str, Any] = (body.get("status") or {}) if current is None else current
    fields = status.to_status()
    fields.pop("observedGeneration", None)
    wanted = [
        cond.Condition(c["type"], c["status"], c.get("reason", ""), c.get("message", ""))
        for c in fields.pop("conditions", None) or ()
    ]
    delta, moved = compute_status(body, before, fields, wanted, now)
    meta = body["metadata"]
    await patch_status(kube, plural, meta["namespace"], meta["name"], delta)
    announce(body, [t for t in moved if events_for is None or t.type in events_for])
    return cond.merge_patch(before, delta)
